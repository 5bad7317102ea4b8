import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { argumentlessFilterOutputs, renderTemplate } from "../domain/templates.js";
import { LogMasker, MASK } from "./logMasker.js";

/** Feeds `chunks` through a fresh masker and returns everything it released. */
function streamThrough(secrets: readonly string[], chunks: readonly string[]): string {
  const masker = new LogMasker(secrets);
  return chunks.map((chunk) => masker.write(chunk)).join("") + masker.flush();
}

/** Cuts `text` at the given positions (taken modulo its length), keeping empty chunks. */
function splitAt(text: string, cuts: readonly number[]): string[] {
  const positions = [...cuts.map((cut) => (text.length === 0 ? 0 : cut % (text.length + 1)))].sort((a, b) => a - b);
  const chunks: string[] = [];
  let start = 0;
  for (const position of positions) {
    chunks.push(text.slice(start, position));
    start = position;
  }
  chunks.push(text.slice(start));
  return chunks;
}

describe("LogMasker", () => {
  it("masks every occurrence of every secret", () => {
    const masker = new LogMasker(["hunter2", "s3cr3t-token"]);
    expect(masker.mask("login hunter2 then hunter2, token=s3cr3t-token.")).toBe(
      `login ${MASK} then ${MASK}, token=${MASK}.`,
    );
  });

  it("treats secrets as plain text, not patterns", () => {
    expect(new LogMasker(["a.b*c(d)$"]).mask("x a.b*c(d)$ aXbbc(d)$")).toBe(`x ${MASK} aXbbc(d)$`);
  });

  it("hides overlapping secrets completely, whichever starts first, as one mask", () => {
    const masker = new LogMasker(["xab", "abcd"]);
    expect(masker.mask("-xabcd-")).toBe(`-${MASK}-`);
    expect(new LogMasker(["abcd", "cdef"]).mask("abcdef")).toBe(MASK);
    expect(new LogMasker(["aaa"]).mask("aaaaaaa b aaa")).toBe(`${MASK} b ${MASK}`);
  });

  it("masks a secret split across two or more writes", () => {
    const masker = new LogMasker(["correct-horse-battery"]);
    const released = [
      masker.write("password: corr"),
      masker.write("ect-hor"),
      masker.write("se-"),
      masker.write("battery\nnext line"),
      masker.flush(),
    ];
    expect(released.join("")).toBe(`password: ${MASK}\nnext line`);
    expect(released[0]).toBe("password: ");
  });

  it("holds back only a possible start of a secret, and releases it once it cannot match", () => {
    const masker = new LogMasker(["hunter2"]);
    expect(masker.write("the hunt")).toBe("the ");
    expect(masker.write("ing season ")).toBe("hunting season ");
    expect(masker.write("ends h")).toBe("ends ");
    expect(masker.flush()).toBe("h");
  });

  it("holds back fewer characters than the longest pattern", () => {
    const secret = "abcdefghij";
    // Every prefix of the secret is a possible start: it is held back, and nothing else is.
    for (let length = 1; length < secret.length; length += 1) {
      const masker = new LogMasker([secret]);
      expect(masker.write(`log ${secret.slice(0, length)}`)).toBe("log ");
      expect(masker.write("!")).toBe(`${secret.slice(0, length)}!`);
    }
  });

  it("can be reused for another stream after flush", () => {
    const masker = new LogMasker(["secret"]);
    expect(masker.write("sec")).toBe("");
    expect(masker.flush()).toBe("sec");
    expect(masker.write("ret")).toBe("ret");
    // A complete match needs no lookahead: it is masked at once.
    expect(masker.write("secret")).toBe(MASK);
    expect(masker.flush()).toBe("");
  });

  it("leaves the stream alone when mask() is used in between", () => {
    const masker = new LogMasker(["secret"]);
    expect(masker.write("a sec")).toBe("a ");
    expect(masker.mask("secret sec")).toBe(`${MASK} sec`);
    expect(masker.write("ret")).toBe(MASK);
    expect(masker.flush()).toBe("");
  });

  it("masks each line of a multi-line secret, with \\n or \\r\\n endings and any indentation", () => {
    const key = "-----BEGIN KEY-----\nMIIEvQIBADANBg\n  }\n-----END KEY-----\n";
    const masker = new LogMasker([key]);
    // The whole key is one covered run, so one mask.
    expect(masker.mask(`key=${key}.`)).toBe(`key=${MASK}.`);
    // Printed line by line with other text in between, each line is masked on its own.
    expect(masker.mask("read -----BEGIN KEY-----\nok\nMIIEvQIBADANBg\n")).toBe(`read ${MASK}\nok\n${MASK}\n`);
    expect(masker.mask("-----BEGIN KEY-----\r\n    MIIEvQIBADANBg\r\n")).toBe(`${MASK}\r\n    ${MASK}\r\n`);
    expect(streamThrough([key], ["MIIE", "vQIB", "ADANBg done"])).toBe(`${MASK} done`);
    // The "}" line is too short to mask: it would hide every closing brace in the log.
    expect(masker.mask("if (x) {\n  }")).toBe("if (x) {\n  }");
  });

  it("masks the base64 and URL-encoded forms of a secret", () => {
    const secret = "p@ss word/ü!";
    const base64 = Buffer.from(secret, "utf8").toString("base64");
    const echoedBase64 = Buffer.from(`${secret}\n`, "utf8").toString("base64");
    const masker = new LogMasker([secret]);
    // Padded (the Base64 filter's output) and unpadded (a JWT's) are both caught.
    expect(base64.endsWith("==")).toBe(true);
    expect(masker.mask(`basic ${base64}`)).toBe(`basic ${MASK}`);
    expect(masker.mask(`jwt ${base64.replace(/=+$/, "")}.x`)).toBe(`jwt ${MASK}.x`);
    // echo's newline leaves the padding out of the pattern: the "=" may stay, it tells nothing.
    expect(masker.mask(`echo ${echoedBase64}`)).toBe(
      `echo ${MASK}${echoedBase64.slice(echoedBase64.replace(/=+$/, "").length)}`,
    );
    expect(masker.mask(`url ?p=${encodeURIComponent(secret)}&x=1`)).toBe(`url ?p=${MASK}&x=1`);
    expect(masker.mask(`form p=${encodeURIComponent(secret).replaceAll("%20", "+")}&x=1`)).toBe(`form p=${MASK}&x=1`);
  });

  it("masks a secret inside a longer base64 text at each of the three offsets (curl -u user:secret)", () => {
    const secret = "s3cr3t-Token_value";
    const masker = new LogMasker([secret]);
    // Usernames of 0–5 characters put the secret at every offset modulo 3.
    for (const user of ["", "u", "us", "usr", "user", "admin"]) {
      const credentials = Buffer.from(`${user}:${secret}`, "utf8").toString("base64");
      const masked = masker.mask(`> Authorization: Basic ${credentials}`);
      expect(masked).toContain(MASK);
      // What stays visible is at most the characters that also hold bits of the user or the end.
      const visible = masked.replace("> Authorization: Basic ", "").split(MASK).join("");
      expect(visible.length, masked).toBeLessThanOrEqual(Math.ceil(((user.length + 1) * 8) / 6) + 4);
      expect(Buffer.from(visible, "base64").toString("latin1")).not.toContain(secret.slice(0, 4));
    }
    // base64url (a JWT's payload) as well.
    const token = Buffer.from(`{"k":"${secret}"}`, "utf8").toString("base64url");
    expect(masker.mask(token)).toContain(MASK);
  });

  it("masks the hex of a secret in lower and upper case, alone or inside a longer dump", () => {
    const secret = "hunter2-hunter2";
    const hex = Buffer.from(secret, "utf8").toString("hex");
    const masker = new LogMasker([secret]);
    expect(masker.mask(`hex ${hex}`)).toBe(`hex ${MASK}`);
    expect(masker.mask(`HEX ${hex.toUpperCase()}`)).toBe(`HEX ${MASK}`);
    expect(masker.mask(`dump 00ff${hex}0b00`)).toBe(`dump 00ff${MASK}0b00`);
    // With echo's newline ("0a") the whole is one mask.
    expect(masker.mask(`dump ${hex}0a00`)).toBe(`dump ${MASK}00`);
  });

  it("masks every filter output of a secret (#{ApiToken | ToUpper} and the others)", () => {
    const secret = ' Api "Token" value/1 ';
    const masker = new LogMasker([secret]);
    for (const output of argumentlessFilterOutputs(secret)) {
      expect(masker.mask(`approve with ${output}?`)).toBe(`approve with ${MASK}?`);
    }
    // The finding's example: an approval prompt rendered from a template.
    const prompt = renderTemplate("Deploy with token #{ApiToken | ToUpper}?", new Map([["ApiToken", secret]]));
    expect(masker.mask(prompt)).toBe(`Deploy with token ${MASK}?`);
  });

  it("masks a long secret's base64 and hex wrapped into lines, as base64, openssl base64 and xxd -p print them", () => {
    const secret = "a-service-account-key-".repeat(5);
    const masker = new LogMasker([secret]);
    const base64 = Buffer.from(`${secret}\n`, "utf8").toString("base64");
    const hex = Buffer.from(`${secret}\n`, "utf8").toString("hex");
    for (const [width, encoded] of [
      [76, base64],
      [64, base64],
      [60, hex],
    ] as const) {
      const lines = encoded.match(new RegExp(`.{1,${width}}`, "g")) ?? [];
      expect(lines.length).toBeGreaterThan(1);
      for (const line of lines) {
        const masked = masker.mask(line);
        // Every full line is masked whole; the last keeps at most its padding.
        expect(masked.startsWith(MASK), `${width}: ${line}`).toBe(true);
        expect(masked.replace(MASK, "")).toMatch(/^=*$/);
      }
    }
  });

  it("masks each line of a multi-line secret printed one line at a time, lines of 4 characters or more", () => {
    const secret = "---\nuser: deploy\npassword: hunter2-hunter2\n}\nabcd";
    const masker = new LogMasker([secret]);
    const printed = ["config:", "---", "user: deploy", "  password: hunter2-hunter2", "}", "abcd"].map((line) =>
      masker.mask(line),
    );
    // "---" and "}" are too short to hide on their own: they would hide every such run in the log.
    expect(printed).toEqual(["config:", "---", MASK, `  ${MASK}`, "}", MASK]);
  });

  it("ignores secrets shorter than three characters, and their encodings", () => {
    const masker = new LogMasker(["ab", "", "x"]);
    const text = `ab x ${Buffer.from("ab").toString("base64")} abc`;
    expect(masker.write(text)).toBe(text);
    expect(masker.flush()).toBe("");
    expect(new LogMasker([]).mask("anything")).toBe("anything");
  });

  it("does not end a chunk in the middle of a surrogate pair", () => {
    const masker = new LogMasker(["secret"]);
    expect(masker.write("smile \uD83D")).toBe("smile ");
    expect(masker.write("\uDE00 sec")).toBe("\uD83D\uDE00 ");
    expect(masker.write("ret \uD83D")).toBe(`${MASK} `);
    expect(masker.flush()).toBe("\uD83D");
  });

  it("passes a large log without secrets through unchanged, chunk by chunk", () => {
    const line = "2026-01-01T00:00:00Z info pulling layer sha256:0123456789abcdef done\n";
    const log = line.repeat(20_000);
    const chunks = splitAt(
      log,
      Array.from({ length: 500 }, (_, index) => index * 2749),
    );
    expect(streamThrough(["sha256:fedcba", "hunter2"], chunks)).toBe(log);
  });
});

/**
 * An independent, deliberately naive masker: mark every position covered by any
 * occurrence of any pattern, then turn each run of covered positions into one MASK.
 * It knows only the secrets' text forms (hiddenForms), so the generated text must not be
 * able to contain the encoded forms (see `alphabet`).
 */
function naiveMask(text: string, secrets: readonly string[]): string {
  const patterns = hiddenForms(secrets);
  const covered = new Array<boolean>(text.length).fill(false);
  for (const pattern of patterns) {
    for (let index = text.indexOf(pattern); index !== -1; index = text.indexOf(pattern, index + 1)) {
      covered.fill(true, index, index + pattern.length);
    }
  }
  let output = "";
  for (let index = 0; index < text.length; index += 1) {
    if (!covered[index]) output += text[index];
    else if (index === 0 || !covered[index - 1]) output += MASK;
  }
  return output;
}

/**
 * Small alphabet so secrets overlap and recur often. None of these characters can start
 * a whole base64 encoding of such a secret (those start with Y, I, C, D or L) or its hex
 * (digits), no base64 piece of such a secret is made of them alone (checked by brute
 * force for secrets up to 8 characters), and '%', '+' and '\\' are absent, so encoded
 * forms never occur in the text by chance.
 */
const alphabet = fc.constantFrom("a", "b", "c", "-", " ", "\n", "\r");

const secretsAndLog = (unit: fc.Arbitrary<string>) =>
  fc
    .array(
      fc.string({ unit, minLength: 1, maxLength: 12 }).filter((secret) => !secret.includes("*")),
      { minLength: 1, maxLength: 4 },
    )
    .chain((secrets) =>
      fc.record({
        secrets: fc.constant(secrets),
        text: fc
          .array(fc.oneof(fc.string({ unit, maxLength: 10 }), fc.constantFrom(...secrets)), { maxLength: 12 })
          .map((parts) => parts.join("")),
        cuts: fc.array(fc.nat(), { maxLength: 10 }),
      }),
    );

/**
 * The text forms that must not survive masking: each secret of 3 or more characters, its
 * lines of 4 or more, and its argument-less filter outputs of 3 or more (Trim and ToUpper
 * give forms made of the alphabet's characters).
 */
function hiddenForms(secrets: readonly string[]): string[] {
  return secrets
    .filter((secret) => secret.length >= 3)
    .flatMap((secret) => [
      secret,
      ...secret
        .split(/\r\n|\r|\n/)
        .map((line) => line.trim())
        .filter((line) => line.length >= 4),
      ...argumentlessFilterOutputs(secret),
    ])
    .filter((form) => form.length >= 3);
}

describe("LogMasker properties", () => {
  it("gives the same output for any split into chunks as for the whole text, with no secret left", () => {
    fc.assert(
      fc.property(secretsAndLog(alphabet), ({ secrets, text, cuts }) => {
        const chunked = streamThrough(secrets, splitAt(text, cuts));
        expect(chunked).toBe(new LogMasker(secrets).mask(text));
        expect(chunked).toBe(streamThrough(secrets, [text]));
        for (const form of hiddenForms(secrets)) {
          expect(chunked).not.toContain(form);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("agrees with a naive union-of-occurrences masker", () => {
    fc.assert(
      fc.property(secretsAndLog(alphabet), ({ secrets, text, cuts }) => {
        expect(streamThrough(secrets, splitAt(text, cuts))).toBe(naiveMask(text, secrets));
      }),
      { numRuns: 500 },
    );
  });

  it("holds for any Unicode text, surrogate pairs split or not", () => {
    fc.assert(
      fc.property(
        secretsAndLog(fc.string({ unit: "binary", minLength: 1, maxLength: 1 })),
        ({ secrets, text, cuts }) => {
          const chunked = streamThrough(secrets, splitAt(text, cuts));
          expect(chunked).toBe(new LogMasker(secrets).mask(text));
          for (const form of hiddenForms(secrets)) {
            expect(chunked).not.toContain(form);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("secrets in URLs an http step logs", () => {
  it("hides a secret as the URL parser encodes it in a query, a path and a password", () => {
    const secret = 'tok"en/with+slash <x>';
    const masker = new LogMasker([secret]);
    const url = new URL(`http://127.0.0.1:8080/${secret}?token=${secret}`);
    url.password = secret;
    url.username = "user";
    const line = masker.mask(`probing ${url.href}`);
    expect(line).not.toContain("tok%22en");
    expect(line).not.toContain('tok"en');
    expect(line).toContain("http://user:");
  });
});
