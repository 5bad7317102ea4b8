/**
 * ANSI SGR colours and weights in log lines, as runs of text with classes (and a colour
 * value for 256-colour and true-colour codes). Other escape sequences (cursor moves, OSC
 * titles) are dropped. Parsed per visible line, so 50,000 lines cost nothing until shown.
 */

export interface AnsiRun {
  text: string;
  classes: string;
  /** For 256-colour and RGB codes: a CSS colour (set through the CSSOM, which the CSP allows). */
  color?: string;
  background?: string;
}

interface Style {
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  foreground?: string;
  background?: string;
  foregroundValue?: string;
  backgroundValue?: string;
}

const NAMES = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

const ESC = String.fromCharCode(27);
const BEL = String.fromCharCode(7);
/** CSI sequences (colours are `m`), OSC strings (titles, links) and the short charset and keypad ones. */
const SEQUENCE = new RegExp(
  `${ESC}\\[([0-9;]*)([A-Za-z])|${ESC}\\][^${BEL}${ESC}]*(?:${BEL}|${ESC}\\\\)|${ESC}[()][A-Za-z0-9]|${ESC}[=>]`,
  "g",
);

function hasAnsi(text: string): boolean {
  return text.includes(ESC);
}

export function parseAnsi(text: string): AnsiRun[] {
  if (!hasAnsi(text)) return [{ text, classes: "" }];
  const runs: AnsiRun[] = [];
  let style: Style = { bold: false, dim: false, italic: false, underline: false };
  let last = 0;
  for (const match of text.matchAll(SEQUENCE)) {
    const index = match.index ?? 0;
    if (index > last) runs.push(run(text.slice(last, index), style));
    last = index + match[0].length;
    if (match[2] === "m") style = applySgr(style, match[1] ?? "");
  }
  if (last < text.length) runs.push(run(text.slice(last), style));
  return runs;
}

function run(text: string, style: Style): AnsiRun {
  const classes = [
    style.bold && "ansi-bold",
    style.dim && "ansi-dim",
    style.italic && "ansi-italic",
    style.underline && "ansi-underline",
    style.foreground && `ansi-fg-${style.foreground}`,
    style.background && `ansi-bg-${style.background}`,
  ]
    .filter(Boolean)
    .join(" ");
  return {
    text,
    classes,
    ...(style.foregroundValue && { color: style.foregroundValue }),
    ...(style.backgroundValue && { background: style.backgroundValue }),
  };
}

function applySgr(current: Style, parameters: string): Style {
  const codes = parameters === "" ? [0] : parameters.split(";").map((code) => Number(code));
  let style = { ...current };
  for (let index = 0; index < codes.length; index++) {
    const code = codes[index] ?? 0;
    if (code === 0) style = { bold: false, dim: false, italic: false, underline: false };
    else if (code === 1) style.bold = true;
    else if (code === 2) style.dim = true;
    else if (code === 3) style.italic = true;
    else if (code === 4) style.underline = true;
    else if (code === 22) style.bold = style.dim = false;
    else if (code === 23) style.italic = false;
    else if (code === 24) style.underline = false;
    else if (code >= 30 && code <= 37) style = { ...withoutForeground(style), foreground: NAMES[code - 30] };
    else if (code >= 90 && code <= 97)
      style = { ...withoutForeground(style), foreground: `bright-${NAMES[code - 90]}` };
    else if (code === 39) style = withoutForeground(style);
    else if (code >= 40 && code <= 47) style = { ...withoutBackground(style), background: NAMES[code - 40] };
    else if (code >= 100 && code <= 107)
      style = { ...withoutBackground(style), background: `bright-${NAMES[code - 100]}` };
    else if (code === 49) style = withoutBackground(style);
    else if (code === 38 || code === 48) {
      const [value, used] = extendedColour(codes, index + 1);
      index += used;
      if (value !== undefined) {
        style =
          code === 38
            ? { ...withoutForeground(style), foregroundValue: value }
            : { ...withoutBackground(style), backgroundValue: value };
      }
    }
  }
  return style;
}

function withoutForeground(style: Style): Style {
  const { foreground: _name, foregroundValue: _value, ...rest } = style;
  return rest;
}

function withoutBackground(style: Style): Style {
  const { background: _name, backgroundValue: _value, ...rest } = style;
  return rest;
}

/** 38;5;N (256 colours) or 38;2;R;G;B: the colour and how many codes it used. */
function extendedColour(codes: number[], at: number): [string | undefined, number] {
  const mode = codes[at];
  if (mode === 5) {
    const value = codes[at + 1] ?? 0;
    return [xterm256(value), 2];
  }
  if (mode === 2) {
    const [red = 0, green = 0, blue = 0] = codes.slice(at + 1, at + 4);
    return [`rgb(${red}, ${green}, ${blue})`, 4];
  }
  return [undefined, 0];
}

const BASIC = [
  "#000000",
  "#cd3131",
  "#0dbc79",
  "#e5e510",
  "#2472c8",
  "#bc3fbc",
  "#11a8cd",
  "#e5e5e5",
  "#666666",
  "#f14c4c",
  "#23d18b",
  "#f5f543",
  "#3b8eea",
  "#d670d6",
  "#29b8db",
  "#ffffff",
];

function xterm256(value: number): string {
  if (value < 16) return BASIC[value] ?? "#ffffff";
  if (value < 232) {
    const index = value - 16;
    const level = (step: number) => (step === 0 ? 0 : 55 + step * 40);
    return `rgb(${level(Math.floor(index / 36))}, ${level(Math.floor(index / 6) % 6)}, ${level(index % 6)})`;
  }
  const grey = 8 + (value - 232) * 10;
  return `rgb(${grey}, ${grey}, ${grey})`;
}
