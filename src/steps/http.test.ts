import { describe, expect, it } from "vitest";
import { TaskFailure } from "../engine/types.js";
import { defaultOutboundPolicy, parseOutboundAllow } from "../security/outboundGuard.js";
import { httpUrl, originIsWritten, renderStepUrl, urlTemplateSchema } from "./http.js";

describe("originIsWritten: is a step URL's scheme, host and port written in the process?", () => {
  it("trusts literal origins, earlier steps' outputs and the colour's preview URL", () => {
    for (const template of [
      "http://127.0.0.1:8080/health",
      "http://127.0.0.1:#{Ferry.Step[web].Output.hostPort}/health",
      "http://127.0.0.1:#{Ferry.Step[web].Output.hostPort.8080}/",
      "http://#{Ferry.Step[web].Output.containerName}:8080/",
      "#{Ferry.Route.PreviewUrl}/health",
      "#{Ferry.Route.PreviewUrl}/#{Path}?token=#{Token}",
      // An isolated group's published addresses (ADR 0045).
      "#{Ferry.Isolated.Url}/health",
      "#{Ferry.Isolated.Service[web].Url}/",
      "#{Ferry.Isolated.Service[web].InternalUrl}/#{Path}",
      // Variables after the authority choose the path, query or fragment, never the address.
      "http://127.0.0.1:8080/#{Path}",
      "http://127.0.0.1:8080?#{Query}",
      "https://app.example.com#section-#{Anchor}",
      "http://127.0.0.1:8080\\#{Path}",
      "HTTP://127.0.0.1:8080/",
    ]) {
      expect(originIsWritten(template), template).toBe(true);
    }
  });

  it("does not trust an origin a variable or a block may choose, in any spelling the URL parser accepts", () => {
    for (const template of [
      "#{HealthUrl}",
      "#{HealthUrl}/v2/_catalog",
      "http://#{Host}/health",
      "http://127.0.0.1:#{Port}/health",
      "http://user:#{Password}@127.0.0.1/",
      "http://127.0.0.1:8080#{Path}", // "@evil.example/" makes 127.0.0.1:8080 the user info
      "#{Ferry.Route.PreviewUrl}#{Rest}", // "@169.254.169.254/" likewise
      "#{Ferry.Isolated.Url}#{Rest}", // likewise
      "http://#{Ferry.Isolated.Network}/", // a name, not an address the group published
      "#{Scheme}://127.0.0.1/",
      "http:#{Rest}", // http:127.0.0.1 is http://127.0.0.1/
      "http:/#{Rest}",
      "http:///#{Rest}", // extra slashes are skipped by the parser
      "http:\\\\#{Rest}",
      "#{if Local}http://127.0.0.1:5000#{else}https://app.example.com#{/if}/",
      "#{Ferry.Release.Number}.example.com", // not a URL the process wrote: a deployer picks the version
      '#{Ferry.Step[web].Output.hostPort | Default "x"}#{Host}',
      "http://#{Ferry.Environment.Slug}.internal/",
      "not a template #{",
    ]) {
      expect(originIsWritten(template), template).toBe(false);
    }
  });

  it("reads ##{ as the literal text it is, as rendering does", () => {
    // "##{Host}" renders as the text "#{Host}": a fragment, not a variable.
    expect(originIsWritten("http://127.0.0.1:8080/##{Host}")).toBe(true);
  });
});

describe("renderStepUrl", () => {
  const variables = new Map([
    ["HealthUrl", "http://127.0.0.1:5000/v2/_catalog"],
    ["Ferry.Step[web].Output.hostPort", "32768"],
  ]);
  const render = (template: string) =>
    template.replace(/#\{([^}]+)\}/g, (_, name: string) => variables.get(name) ?? "");
  const policy = parseOutboundAllow("10.0.0.0/8");

  it("calls a written URL as it is, and a chosen one through the step's policy (the defaults without one)", () => {
    const written = renderStepUrl(
      { render, outbound: policy },
      "http://127.0.0.1:#{Ferry.Step[web].Output.hostPort}/",
      "url",
    );
    expect(written.url.href).toBe("http://127.0.0.1:32768/");
    expect(written.guard).toBeUndefined();
    const chosen = renderStepUrl({ render, outbound: policy }, "#{HealthUrl}", "url");
    expect(chosen.url.href).toBe("http://127.0.0.1:5000/v2/_catalog");
    expect(chosen.guard).toBe(policy);
    expect(renderStepUrl({ render }, "#{HealthUrl}", "url").guard).toBe(defaultOutboundPolicy);
  });
});

describe("URLs are called as they are written", () => {
  it("refuses line breaks, tabs and control characters in a step's URL template when the process is saved", () => {
    const refused = urlTemplateSchema.safeParse("http://127.0.0.1:8080/\r\nhealth");
    expect(refused.success).toBe(false);
    expect(refused.error?.issues[0]?.message).toMatch(/remove the line break, tab or control character/);
    // A space may sit inside a tag: it is checked once rendered.
    expect(urlTemplateSchema.safeParse('http://127.0.0.1/#{Path | Default "x"}').success).toBe(true);
  });

  it("refuses a rendered URL with a space or a line break, naming the field and the position", () => {
    for (const [text, what] of [
      ["http://127.0.0.1:8080/a b", "a space at position 24"],
      ["http://127.0.0.1:8080/\nhealth", "a line break, tab or control character at position 23"],
      [" http://127.0.0.1/", "a space at position 1"],
    ] as const) {
      expect(() => httpUrl(text, "url"), text).toThrow(TaskFailure);
      expect(() => httpUrl(text, "url"), text).toThrow(`url has ${what}; percent-encode it`);
    }
  });
});
