import { describe, expect, it } from "vitest";
import { renderTemplate, TemplateError, templateVariables, type VariableLookup } from "./templates.js";

const variables = (values: Record<string, string>): VariableLookup => new Map(Object.entries(values));

/** The TemplateError a render throws, so a test can look at its message and fields. */
function renderError(template: string, values: Record<string, string> = {}): TemplateError {
  try {
    renderTemplate(template, variables(values));
  } catch (error) {
    if (error instanceof TemplateError) return error;
    throw error;
  }
  throw new Error(`expected ${JSON.stringify(template)} to fail`);
}

describe("renderTemplate substitution", () => {
  it("replaces names, with or without spaces inside the braces", () => {
    const values = variables({ Host: "db.internal", Port: "5432" });
    expect(renderTemplate("postgres://#{Host}:#{ Port }/app", values)).toBe("postgres://db.internal:5432/app");
  });

  it("accepts names with dots, dashes, digits and bracket indexers", () => {
    const values = variables({
      "App.Api-Key_2": "k",
      "Ferry.Step[deploy web].Output.Port": "8080",
    });
    expect(renderTemplate("#{App.Api-Key_2} #{Ferry.Step[deploy web].Output.Port}", values)).toBe("k 8080");
  });

  it("keeps text without tags as it is, including a lone '#' and '{'", () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell syntax must pass through untouched
    const text = '# heading\n{ "a": 1 }\n$HOME ${PATH} #notatag';
    expect(renderTemplate(text, variables({}))).toBe(text);
  });

  it("turns '##{' into a literal '#{' without looking inside", () => {
    expect(renderTemplate("##{Name} is #{Name}", variables({ Name: "x" }))).toBe("#{Name} is x");
    expect(renderTemplate("##{ unclosed", variables({}))).toBe("#{ unclosed");
  });

  it("inserts values verbatim and never expands a tag inside a value", () => {
    const values = variables({ Greeting: "#{Secret} and ##{x}", Secret: "hunter2" });
    expect(renderTemplate("say #{Greeting}", values)).toBe("say #{Secret} and ##{x}");
  });
});

describe("renderTemplate filters", () => {
  const values = variables({ Name: "  Web Api  ", Empty: "", Path: "a b/c?d=é", Quote: 'say "hi"\n\tok\\' });

  it("applies the case, trim and encoding filters", () => {
    expect(renderTemplate("#{Name | Trim | ToUpper}", values)).toBe("WEB API");
    expect(renderTemplate("#{Name | Trim | ToLower}", values)).toBe("web api");
    expect(renderTemplate("#{Path | UrlEncode}", values)).toBe("a%20b%2Fc%3Fd%3D%C3%A9");
    expect(renderTemplate("#{Path | Base64}", values)).toBe(Buffer.from("a b/c?d=é", "utf8").toString("base64"));
    expect(renderTemplate('{"v": "#{Quote | JsonEscape}"}', values)).toBe('{"v": "say \\"hi\\"\\n\\tok\\\\"}');
    expect(JSON.parse(renderTemplate('"#{Quote | JsonEscape}"', values))).toBe('say "hi"\n\tok\\');
  });

  it("matches filter names regardless of case", () => {
    expect(renderTemplate("#{Name | trim | toupper}", values)).toBe("WEB API");
  });

  it("replaces every occurrence, with escapes in the quoted arguments", () => {
    expect(renderTemplate('#{Name | Trim | Replace " " "-"}', values)).toBe("Web-Api");
    expect(renderTemplate('#{Csv | Replace "," "\\n"}', variables({ Csv: "a,b,c" }))).toBe("a\nb\nc");
    expect(renderTemplate('#{Text | Replace "\\"" "\'"}', variables({ Text: '"x"' }))).toBe("'x'");
  });

  it("uses Default for a missing or empty variable, and only then", () => {
    expect(renderTemplate('#{Missing | Default "8080"}', values)).toBe("8080");
    expect(renderTemplate('#{Empty | Default "none"}', values)).toBe("none");
    expect(renderTemplate('#{Name | Trim | Default "none"}', values)).toBe("Web Api");
    expect(renderTemplate('#{Missing | Default "a } b"}', values)).toBe("a } b");
  });

  it("passes a missing variable through other filters to a Default later in the chain", () => {
    expect(renderTemplate('#{Missing | ToUpper | Default "fallback"}', values)).toBe("fallback");
    expect(renderTemplate('#{Missing | Default "fallback" | ToUpper}', values)).toBe("FALLBACK");
    expect(renderTemplate('#{Blank | Trim | Default "was blank"}', variables({ Blank: "   " }))).toBe("was blank");
  });

  it("rejects an unknown filter by name, even in a branch that is not taken", () => {
    const error = renderError("ok\n#{if Off}#{Name | ToTitle}#{/if}", { Name: "x" });
    expect(error.message).toContain("unknown filter 'ToTitle'");
    expect(error.message).toContain("line 2");
    expect(error.line).toBe(2);
  });

  it("rejects filters with the wrong arguments", () => {
    expect(renderError("#{Name | Default}").message).toContain("Default takes 1 argument");
    expect(renderError('#{Name | Replace "a"}').message).toContain("Replace takes 2 argument");
    expect(renderError('#{Name | ToUpper "x"}').message).toContain("ToUpper takes 0 argument");
    expect(renderError("#{Name | Default fallback}").message).toContain("double quotes");
    expect(renderError('#{Name | Replace "" "x"}').message).toContain("non-empty");
    expect(renderError("#{Name ToUpper}").message).toContain("'#{Name | Filter}'");
  });
});

describe("renderTemplate conditionals", () => {
  it("takes the if branch for a set value and the else branch otherwise", () => {
    const template = "#{if Debug}debug#{else}quiet#{/if}";
    expect(renderTemplate(template, variables({ Debug: "yes" }))).toBe("debug");
    for (const falsy of ["", "false", "False", "FALSE", "0"]) {
      expect(renderTemplate(template, variables({ Debug: falsy }))).toBe("quiet");
    }
    expect(renderTemplate(template, variables({}))).toBe("quiet");
  });

  it("compares with == and != against a quoted value", () => {
    const template = '#{if Env == "Production"}prod#{/if}#{if Env != "Production"}other#{/if}';
    expect(renderTemplate(template, variables({ Env: "Production" }))).toBe("prod");
    expect(renderTemplate(template, variables({ Env: "Staging" }))).toBe("other");
    expect(renderTemplate(template, variables({}))).toBe("other");
    expect(renderTemplate('#{if Env == ""}unset#{/if}', variables({}))).toBe("unset");
  });

  it("inverts with unless, which may have an else", () => {
    const template = "#{unless Tls}http#{else}https#{/unless}://x";
    expect(renderTemplate(template, variables({ Tls: "True" }))).toBe("https://x");
    expect(renderTemplate(template, variables({ Tls: "False" }))).toBe("http://x");
  });

  it("nests conditionals", () => {
    const template = "#{if A}a#{if B}b#{else}!b#{/if}#{else}!a#{unless B}!b#{/unless}#{/if}";
    expect(renderTemplate(template, variables({ A: "1", B: "1" }))).toBe("ab");
    expect(renderTemplate(template, variables({ A: "1" }))).toBe("a!b");
    expect(renderTemplate(template, variables({}))).toBe("!a!b");
  });

  it("does not ask for variables in a branch that is not taken", () => {
    expect(renderTemplate("#{if Tls}#{CertPath}#{/if}done", variables({}))).toBe("done");
  });
});

describe("renderTemplate loops", () => {
  it("loops over a comma-separated value, trimming and dropping empty items", () => {
    const template = "#{each host in Hosts}[#{Ferry.Each.Index}:#{host}]#{/each}";
    expect(renderTemplate(template, variables({ Hosts: " a, b ,,c " }))).toBe("[0:a][1:b][2:c]");
    expect(renderTemplate(template, variables({ Hosts: "" }))).toBe("");
  });

  it("prefers list() when the lookup provides one", () => {
    const lookup: VariableLookup = {
      get: (name) => (name === "Hosts" ? "ignored" : undefined),
      list: (name) => (name === "Hosts" ? ["x,1", "y"] : undefined),
    };
    expect(renderTemplate("#{each h in Hosts}(#{h})#{/each}", lookup)).toBe("(x,1)(y)");
  });

  it("marks the first and last item", () => {
    const template = "#{each s in Servers}#{s}#{unless Ferry.Each.Last}, #{/unless}#{/each}";
    expect(renderTemplate(template, variables({ Servers: "a,b,c" }))).toBe("a, b, c");
    const firsts = "#{each s in Servers}#{Ferry.Each.First}/#{Ferry.Each.Last} #{/each}";
    expect(renderTemplate(firsts, variables({ Servers: "a,b" }))).toBe("True/False False/True ");
  });

  it("nests loops, the inner index shadowing the outer one, and reads outer variables", () => {
    const template =
      "#{each region in Regions}#{region}:#{each zone in Zones}#{region}-#{zone}@#{Ferry.Each.Index}#{Suffix} #{/each}#{/each}";
    const values = variables({ Regions: "eu,us", Zones: "a,b", Suffix: "!" });
    expect(renderTemplate(template, values)).toBe("eu:eu-a@0! eu-b@1! us:us-a@0! us-b@1! ");
  });

  it("lets the item shadow a variable of the same name only inside the loop", () => {
    const template = "#{Name}|#{each Name in List}#{Name}#{/each}|#{Name}";
    expect(renderTemplate(template, variables({ Name: "outer", List: "i1,i2" }))).toBe("outer|i1i2|outer");
  });

  it("combines loops with conditionals and filters", () => {
    const template = '#{each p in Ports}#{if p != "22"}#{p | Replace "0" "O"};#{/if}#{/each}';
    expect(renderTemplate(template, variables({ Ports: "22,80,8080" }))).toBe("8O;8O8O;");
  });
});

describe("renderTemplate missing variables", () => {
  it("names the missing variable and its line", () => {
    const error = renderError("line one\nline two\nurl=#{DbUrl}\n");
    expect(error).toBeInstanceOf(TemplateError);
    expect(error.message).toContain("variable 'DbUrl' is not defined (in template at line 3)");
    expect(error.missing).toEqual(["DbUrl"]);
    expect(error.line).toBe(3);
  });

  it("reports every missing variable in one error, each once, in order of first use", () => {
    const error = renderError("#{B}\n#{A}\n#{B}\n#{each x in Items}#{x}#{/each}#{Present}", { Present: "ok" });
    expect(error.missing).toEqual(["B", "A", "Items"]);
    expect(error.message).toContain("'B' (line 1), 'A' (line 2), 'Items' (line 4)");
  });

  it("counts lines inside escapes and tags when reporting", () => {
    const error = renderError("##{x}\n#{if A\n}\n#{/if}#{if Set}\n#{Missing}#{/if}", { Set: "1" });
    expect(error.message).toContain("'Missing' is not defined (in template at line 5)");
  });

  it("collects missing variables inside loop bodies", () => {
    const error = renderError("#{each x in L}\n#{x}#{Missing}#{/each}", { L: "a,b" });
    expect(error.missing).toEqual(["Missing"]);
  });
});

describe("renderTemplate syntax errors", () => {
  it.each([
    ["#{if A}x", "'#{if}' opened at line 1 is never closed with '#{/if}'"],
    ["x\n#{/if}", "'#{/if}' at line 2 has no matching '#{if}'"],
    ["#{if A}\n#{each i in L}\n#{/if}#{/each}", "'#{/if}' at line 3 closes '#{each}' opened at line 2"],
    ["#{else}", "'#{else}' at line 1 is not inside '#{if}' or '#{unless}'"],
    ["#{each i in L}#{else}#{/each}", "not inside '#{if}'"],
    ["#{if A}#{else}#{else}#{/if}", "has a second '#{else}' at line 1"],
    ["#{/for}", "unknown tag '#{/for}'"],
    ["#{for x in y}", "'#{Name | Filter}'"],
    ["#{if}", "needs a variable name"],
    ["#{if A == B}#{/if}", "is not a condition"],
    ["#{each x of L}#{/each}", "is not a loop"],
    ["#{else if A}", "there is no 'else if'"],
    ["#{}", "empty tag"],
    ["#{ Name", "'#{' at line 1 is not closed"],
    ['#{Name | Default "open}', "not closed with '\"'"],
    ["#{Step[web}", "'[' in the tag at line 1 is not closed"],
    ["#{Name & x}", "unexpected '&'"],
  ])("%j is refused: %s", (template, message) => {
    const error = renderError(template, { A: "1", L: "a" });
    expect(error.message).toContain(message);
    expect(error.missing).toEqual([]);
    expect(error.line).toBeGreaterThan(0);
  });
});

describe("templateVariables", () => {
  it("lists every referenced name once, in order, leaving out loop-local names", () => {
    const template = [
      '#{Host}:#{Port | Default "80"}',
      "#{if Tls}#{Cert}#{else}#{Host}#{/if}",
      '#{unless Env == "prod"}#{Debug}#{/unless}',
      "#{each server in Servers}#{server}#{Ferry.Each.Index}#{each zone in server}#{zone}#{Domain}#{/each}#{/each}",
      "#{Ferry.Step[deploy web].Output.Port} ##{NotAVariable}",
    ].join("\n");
    expect(templateVariables(template)).toEqual([
      "Host",
      "Port",
      "Tls",
      "Cert",
      "Env",
      "Debug",
      "Servers",
      "Domain",
      "Ferry.Step[deploy web].Output.Port",
    ]);
  });

  it("reports Ferry.Each names used outside any loop", () => {
    expect(templateVariables("#{Ferry.Each.Index}")).toEqual(["Ferry.Each.Index"]);
  });

  it("refuses a template with bad syntax", () => {
    expect(() => templateVariables("#{if A}")).toThrow(TemplateError);
  });
});
