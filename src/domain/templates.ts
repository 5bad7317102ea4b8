/**
 * Octopus-style templates: `#{Name}`, filters (`#{Name | ToUpper}`), `#{if}`/`#{unless}`
 * conditionals and `#{each}` loops. A template is parsed into a small tree first and the
 * tree is then evaluated, so a value is always inserted verbatim: a value that itself
 * contains `#{X}` is never expanded again (that would let whoever sets one variable read
 * any other, sensitive ones included).
 */
import { InputError } from "./errors.js";

/** Where a template reads its variables from; a `Map<string, string>` already is one. */
export interface VariableLookup {
  get(name: string): string | undefined;
  /** The elements of a list variable; when absent or undefined, the value is split on commas. */
  list?(name: string): readonly string[] | undefined;
}

/** A template that cannot be rendered: bad syntax, or variables that are not defined. */
export class TemplateError extends InputError {
  constructor(
    message: string,
    /** Every variable the template needed but could not find, in order of first use. */
    readonly missing: readonly string[] = [],
    /** Line (1-based) of the offending tag, or of the first missing variable. */
    readonly line?: number,
  ) {
    super(message);
  }
}

interface Filter {
  readonly definition: FilterDefinition;
  readonly arguments: readonly string[];
}

interface Condition {
  readonly name: string;
  readonly comparison?: { readonly operator: "==" | "!="; readonly value: string };
}

interface ConditionalNode {
  readonly kind: "conditional";
  /** True for `#{unless}`. */
  readonly negated: boolean;
  readonly condition: Condition;
  readonly whenTrue: TemplateNode[];
  readonly whenFalse: TemplateNode[];
  readonly line: number;
}

interface LoopNode {
  readonly kind: "loop";
  readonly item: string;
  readonly list: string;
  readonly body: TemplateNode[];
  readonly line: number;
}

type TemplateNode =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "substitution"; readonly name: string; readonly filters: readonly Filter[]; readonly line: number }
  | ConditionalNode
  | LoopNode;

/** Names a loop body sees besides its item; they shadow outer variables of the same name. */
const EACH_INDEX = "Ferry.Each.Index";
const EACH_FIRST = "Ferry.Each.First";
const EACH_LAST = "Ferry.Each.Last";

/** Renders a template; throws TemplateError listing every missing variable at once. */
export function renderTemplate(template: string, variables: VariableLookup): string {
  const nodes = parseTemplate(template);
  const output: string[] = [];
  // Keep going past a missing variable so one error can name all of them: fixing a
  // deployment one variable per attempt is slow.
  const missing = new Map<string, number>();
  evaluate(nodes, variables, output, missing);
  if (missing.size > 0) {
    throw missingVariablesError(missing);
  }
  return output.join("");
}

/** Names a template reads (outside loop-local names), in order of first use, for `ferry plan`. */
export function templateVariables(template: string): string[] {
  const names = new Set<string>();
  collectNames(parseTemplate(template), new Set(), names);
  return [...names];
}

/**
 * One piece of a template's top level: literal text, a substitution (by variable name), or a
 * block (`#{if}`, `#{unless}`, `#{each}`) whose output depends on variables.
 */
export type TemplatePiece =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "variable"; readonly name: string }
  | { readonly kind: "block" };

/**
 * The top level of a template in order, for checks of where each part of a rendered text
 * comes from (an http step's URL: is its host written in the process or chosen by a
 * variable?). Parsed exactly as renderTemplate parses it, `##{` escapes included.
 */
export function templatePieces(template: string): TemplatePiece[] {
  return parseTemplate(template).map((node): TemplatePiece => {
    if (node.kind === "text") return { kind: "text", text: node.text };
    if (node.kind === "substitution") return { kind: "variable", name: node.name };
    return { kind: "block" };
  });
}

// ---------------------------------------------------------------------------------------
// Filters

interface FilterDefinition {
  readonly name: string;
  readonly arity: number;
  /** `undefined` is a missing variable: every filter but Default passes it through. */
  apply(value: string | undefined, args: readonly string[]): string | undefined;
}

const filterDefinitions: readonly FilterDefinition[] = [
  { name: "ToUpper", arity: 0, apply: (value) => value?.toUpperCase() },
  { name: "ToLower", arity: 0, apply: (value) => value?.toLowerCase() },
  { name: "Trim", arity: 0, apply: (value) => value?.trim() },
  { name: "JsonEscape", arity: 0, apply: (value) => (value === undefined ? undefined : jsonEscape(value)) },
  { name: "UrlEncode", arity: 0, apply: (value) => (value === undefined ? undefined : encodeURIComponent(value)) },
  {
    name: "Base64",
    arity: 0,
    apply: (value) => (value === undefined ? undefined : Buffer.from(value, "utf8").toString("base64")),
  },
  {
    name: "Default",
    arity: 1,
    apply: (value, [fallback = ""]) => (value === undefined || value === "" ? fallback : value),
  },
  {
    name: "Replace",
    arity: 2,
    apply: (value, [search = "", replacement = ""]) => value?.replaceAll(search, replacement),
  },
];

/**
 * What each filter without arguments makes of a value (`#{ApiToken | ToUpper}`…): the log
 * masker hides these forms of a sensitive value as well as the value itself.
 */
export function argumentlessFilterOutputs(value: string): string[] {
  return filterDefinitions
    .filter((filter) => filter.arity === 0)
    .map((filter) => filter.apply(value, []))
    .filter((output) => output !== undefined);
}

/** Filter names match case-insensitively, as in Octopus (`#{Name | toupper}`). */
const filtersByName = new Map(filterDefinitions.map((filter) => [filter.name.toLowerCase(), filter]));

function jsonEscape(value: string): string {
  // JSON.stringify quotes the string; the content between the quotes is the escaped text.
  return JSON.stringify(value).slice(1, -1);
}

// ---------------------------------------------------------------------------------------
// Scanning: template text → text and tag tokens

type TemplateToken =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "tag"; readonly content: string; readonly line: number };

function scanTemplate(template: string): TemplateToken[] {
  const tokens: TemplateToken[] = [];
  let line = 1;
  let position = 0;
  while (position < template.length) {
    const open = template.indexOf("#{", position);
    if (open === -1) {
      tokens.push({ kind: "text", text: template.slice(position) });
      break;
    }
    if (open > position && template[open - 1] === "#") {
      // "##{" is the escape for a literal "#{".
      const text = `${template.slice(position, open - 1)}#{`;
      tokens.push({ kind: "text", text });
      line += countNewlines(text);
      position = open + 2;
      continue;
    }
    const before = template.slice(position, open);
    if (before !== "") {
      tokens.push({ kind: "text", text: before });
      line += countNewlines(before);
    }
    const close = findTagEnd(template, open + 2, line);
    const content = template.slice(open + 2, close);
    tokens.push({ kind: "tag", content, line });
    line += countNewlines(content);
    position = close + 1;
  }
  return tokens;
}

/** Index of the `}` closing a tag, skipping quoted strings and `[...]` indexers. */
function findTagEnd(template: string, start: number, line: number): number {
  let position = start;
  while (position < template.length) {
    const char = template[position];
    if (char === "}") {
      return position;
    }
    if (char === '"') {
      position = skipString(template, position, line);
    } else if (char === "[") {
      const close = template.indexOf("]", position);
      if (close === -1) {
        throw new TemplateError(`'[' in the tag at line ${line} is not closed with ']'`, [], line);
      }
      position = close + 1;
    } else {
      position += 1;
    }
  }
  throw new TemplateError(`'#{' at line ${line} is not closed with '}'; write '##{' for a literal '#{'`, [], line);
}

/** Index just past the closing quote of the string starting at `start`. */
function skipString(text: string, start: number, line: number): number {
  let position = start + 1;
  while (position < text.length) {
    const char = text[position];
    if (char === "\\") {
      position += 2;
    } else if (char === '"') {
      return position + 1;
    } else {
      position += 1;
    }
  }
  throw new TemplateError(`a string in the tag at line ${line} is not closed with '"'`, [], line);
}

function countNewlines(text: string): number {
  let count = 0;
  for (let index = text.indexOf("\n"); index !== -1; index = text.indexOf("\n", index + 1)) {
    count += 1;
  }
  return count;
}

// ---------------------------------------------------------------------------------------
// Tag contents: words, strings, `|`, `==`, `!=`

type TagWord =
  | { readonly kind: "word"; readonly text: string }
  | { readonly kind: "string"; readonly text: string }
  | { readonly kind: "pipe" }
  | { readonly kind: "operator"; readonly text: "==" | "!=" };

const NAME_CHARACTER = /[A-Za-z0-9_.-]/;
const WHITESPACE = /\s/;
const STRING_ESCAPES: Readonly<Record<string, string>> = { n: "\n", r: "\r", t: "\t", '"': '"', "\\": "\\" };

function splitTag(content: string, line: number): TagWord[] {
  const words: TagWord[] = [];
  let position = 0;
  while (position < content.length) {
    const char = content[position] ?? "";
    if (WHITESPACE.test(char)) {
      position += 1;
    } else if (char === "|") {
      words.push({ kind: "pipe" });
      position += 1;
    } else if ((char === "=" || char === "!") && content[position + 1] === "=") {
      words.push({ kind: "operator", text: char === "=" ? "==" : "!=" });
      position += 2;
    } else if (char === '"') {
      const end = skipString(content, position, line);
      words.push({ kind: "string", text: unescapeString(content.slice(position + 1, end - 1)) });
      position = end;
    } else if (NAME_CHARACTER.test(char) || char === "[") {
      const start = position;
      while (position < content.length) {
        const next = content[position] ?? "";
        if (next === "[") {
          // findTagEnd already checked that every "[" has its "]".
          position = content.indexOf("]", position) + 1;
        } else if (NAME_CHARACTER.test(next)) {
          position += 1;
        } else {
          break;
        }
      }
      words.push({ kind: "word", text: content.slice(start, position) });
    } else {
      throw new TemplateError(`unexpected '${char}' in '#{${content}}' at line ${line}`, [], line);
    }
  }
  return words;
}

function unescapeString(text: string): string {
  return text.replace(/\\(.)/gs, (sequence, char: string) => STRING_ESCAPES[char] ?? sequence);
}

// ---------------------------------------------------------------------------------------
// Parsing: tokens → tree

type Tag =
  | { readonly kind: "substitution"; readonly name: string; readonly filters: readonly Filter[] }
  | { readonly kind: "conditional"; readonly negated: boolean; readonly condition: Condition }
  | { readonly kind: "loop"; readonly item: string; readonly list: string }
  | { readonly kind: "else" }
  | { readonly kind: "end"; readonly block: BlockKeyword };

type BlockKeyword = "if" | "unless" | "each";

interface OpenBlock {
  readonly keyword: BlockKeyword;
  readonly line: number;
  readonly node: ConditionalNode | LoopNode;
  /** The list new nodes go to: the `whenTrue`, `whenFalse` or `body` of the node. */
  children: TemplateNode[];
  hasElse: boolean;
}

function parseTemplate(template: string): TemplateNode[] {
  const root: TemplateNode[] = [];
  const open: OpenBlock[] = [];
  const target = (): TemplateNode[] => open.at(-1)?.children ?? root;

  for (const token of scanTemplate(template)) {
    if (token.kind === "text") {
      target().push(token);
      continue;
    }
    const { line } = token;
    const tag = parseTag(token.content, line);
    switch (tag.kind) {
      case "substitution":
        target().push({ kind: "substitution", name: tag.name, filters: tag.filters, line });
        break;
      case "conditional": {
        const node: ConditionalNode = { ...tag, whenTrue: [], whenFalse: [], line };
        target().push(node);
        open.push({ keyword: tag.negated ? "unless" : "if", line, node, children: node.whenTrue, hasElse: false });
        break;
      }
      case "loop": {
        const node: LoopNode = { ...tag, body: [], line };
        target().push(node);
        open.push({ keyword: "each", line, node, children: node.body, hasElse: false });
        break;
      }
      case "else": {
        const block = open.at(-1);
        if (block === undefined || block.node.kind !== "conditional") {
          throw new TemplateError(`'#{else}' at line ${line} is not inside '#{if}' or '#{unless}'`, [], line);
        }
        if (block.hasElse) {
          throw new TemplateError(
            `'#{${block.keyword}}' opened at line ${block.line} has a second '#{else}' at line ${line}`,
            [],
            line,
          );
        }
        block.hasElse = true;
        block.children = block.node.whenFalse;
        break;
      }
      case "end": {
        const block = open.pop();
        if (block === undefined) {
          throw new TemplateError(`'#{/${tag.block}}' at line ${line} has no matching '#{${tag.block}}'`, [], line);
        }
        if (block.keyword !== tag.block) {
          throw new TemplateError(
            `'#{/${tag.block}}' at line ${line} closes '#{${block.keyword}}' opened at line ${block.line}; ` +
              `close it with '#{/${block.keyword}}' first`,
            [],
            line,
          );
        }
        break;
      }
      default:
        return unreachable(tag);
    }
  }
  const unclosed = open.at(-1);
  if (unclosed !== undefined) {
    throw new TemplateError(
      `'#{${unclosed.keyword}}' opened at line ${unclosed.line} is never closed with '#{/${unclosed.keyword}}'`,
      [],
      unclosed.line,
    );
  }
  return root;
}

const CLOSING_TAGS: ReadonlySet<string> = new Set<BlockKeyword>(["if", "unless", "each"]);

function parseTag(content: string, line: number): Tag {
  const trimmed = content.trim();
  const shown = `'#{${trimmed}}' at line ${line}`;
  if (trimmed.startsWith("/")) {
    const keyword = trimmed.slice(1).trim();
    if (!CLOSING_TAGS.has(keyword)) {
      throw new TemplateError(`unknown tag ${shown}; the closing tags are #{/if}, #{/unless} and #{/each}`, [], line);
    }
    return { kind: "end", block: keyword as BlockKeyword };
  }
  const words = splitTag(content, line);
  const [first, ...rest] = words;
  if (first === undefined) {
    throw new TemplateError(`empty tag '#{}' at line ${line}; write '##{' for a literal '#{'`, [], line);
  }
  if (first.kind !== "word") {
    throw new TemplateError(`${shown} must start with a variable name or if, unless, each`, [], line);
  }
  switch (first.text) {
    case "else":
      if (rest.length > 0) {
        throw new TemplateError(`${shown}: '#{else}' takes nothing after it (there is no 'else if')`, [], line);
      }
      return { kind: "else" };
    case "if":
    case "unless":
      return { kind: "conditional", negated: first.text === "unless", condition: parseCondition(rest, shown, line) };
    case "each":
      return parseLoop(rest, shown, line);
    default:
      return { kind: "substitution", name: first.text, filters: parseFilters(rest, shown, line) };
  }
}

function parseCondition(words: readonly TagWord[], shown: string, line: number): Condition {
  const [name, operator, value, ...extra] = words;
  if (name?.kind !== "word") {
    throw new TemplateError(`${shown} needs a variable name to test`, [], line);
  }
  if (operator === undefined) {
    return { name: name.text };
  }
  if (operator.kind !== "operator" || value?.kind !== "string" || extra.length > 0) {
    throw new TemplateError(
      `${shown} is not a condition; write '#{if Name}', '#{if Name == "value"}' or '#{if Name != "value"}'`,
      [],
      line,
    );
  }
  return { name: name.text, comparison: { operator: operator.text, value: value.text } };
}

function parseLoop(words: readonly TagWord[], shown: string, line: number): Tag {
  const [item, keyword, list, ...extra] = words;
  if (
    item?.kind !== "word" ||
    keyword?.kind !== "word" ||
    keyword.text !== "in" ||
    list?.kind !== "word" ||
    extra.length > 0
  ) {
    throw new TemplateError(`${shown} is not a loop; write '#{each item in ListName}'`, [], line);
  }
  return { kind: "loop", item: item.text, list: list.text };
}

function parseFilters(words: readonly TagWord[], shown: string, line: number): Filter[] {
  const filters: Filter[] = [];
  let position = 0;
  while (position < words.length) {
    const pipe = words[position];
    const name = words[position + 1];
    if (pipe?.kind !== "pipe" || name?.kind !== "word") {
      throw new TemplateError(`${shown}: write filters as '#{Name | Filter}'`, [], line);
    }
    const definition = filtersByName.get(name.text.toLowerCase());
    if (definition === undefined) {
      const known = filterDefinitions.map((filter) => filter.name).join(", ");
      throw new TemplateError(`unknown filter '${name.text}' in ${shown}; the filters are ${known}`, [], line);
    }
    position += 2;
    const args: string[] = [];
    for (let word = words[position]; word !== undefined && word.kind !== "pipe"; word = words[position]) {
      if (word.kind !== "string") {
        throw new TemplateError(`${shown}: arguments of ${definition.name} go in double quotes`, [], line);
      }
      args.push(word.text);
      position += 1;
    }
    if (args.length !== definition.arity) {
      throw new TemplateError(
        `${shown}: ${definition.name} takes ${definition.arity} argument(s) in double quotes, got ${args.length}`,
        [],
        line,
      );
    }
    if (definition.name === "Replace" && args[0] === "") {
      throw new TemplateError(`${shown}: Replace needs a non-empty text to find`, [], line);
    }
    filters.push({ definition, arguments: args });
  }
  return filters;
}

// ---------------------------------------------------------------------------------------
// Evaluation

function evaluate(
  nodes: readonly TemplateNode[],
  variables: VariableLookup,
  output: string[],
  missing: Map<string, number>,
): void {
  for (const node of nodes) {
    switch (node.kind) {
      case "text":
        output.push(node.text);
        break;
      case "substitution": {
        const value = applyFilters(variables.get(node.name), node.filters);
        if (value === undefined) {
          if (!missing.has(node.name)) missing.set(node.name, node.line);
        } else {
          output.push(value);
        }
        break;
      }
      case "conditional": {
        const holds = conditionHolds(node.condition, variables) !== node.negated;
        evaluate(holds ? node.whenTrue : node.whenFalse, variables, output, missing);
        break;
      }
      case "loop": {
        const items = listItems(variables, node.list);
        if (items === undefined) {
          if (!missing.has(node.list)) missing.set(node.list, node.line);
          break;
        }
        items.forEach((item, index) => {
          const locals = new Map([
            [node.item, item],
            [EACH_INDEX, String(index)],
            [EACH_FIRST, index === 0 ? "True" : "False"],
            [EACH_LAST, index === items.length - 1 ? "True" : "False"],
          ]);
          evaluate(node.body, withLocals(variables, locals), output, missing);
        });
        break;
      }
      default:
        unreachable(node);
    }
  }
}

function applyFilters(value: string | undefined, filters: readonly Filter[]): string | undefined {
  let result = value;
  for (const filter of filters) {
    result = filter.definition.apply(result, filter.arguments);
  }
  return result;
}

/**
 * A missing variable is false rather than an error: testing whether something is set is
 * what `#{if}` is for. Compared with `==`/`!=`, a missing variable counts as "".
 */
function conditionHolds(condition: Condition, variables: VariableLookup): boolean {
  const value = variables.get(condition.name);
  const { comparison } = condition;
  if (comparison === undefined) {
    return isTruthy(value);
  }
  const equal = (value ?? "") === comparison.value;
  return comparison.operator === "==" ? equal : !equal;
}

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "0" && value.toLowerCase() !== "false";
}

function listItems(variables: VariableLookup, name: string): readonly string[] | undefined {
  const list = variables.list?.(name);
  if (list !== undefined) {
    return list;
  }
  return variables
    .get(name)
    ?.split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

function withLocals(parent: VariableLookup, locals: ReadonlyMap<string, string>): VariableLookup {
  return {
    get: (name) => (locals.has(name) ? locals.get(name) : parent.get(name)),
    // A loop item is a plain value: a loop over it splits it on commas.
    list: (name) => (locals.has(name) ? undefined : parent.list?.(name)),
  };
}

function missingVariablesError(missing: ReadonlyMap<string, number>): TemplateError {
  const entries = [...missing];
  const [first] = entries;
  const fallback = 'give a fallback with | Default "…"';
  if (entries.length === 1 && first !== undefined) {
    const [name, line] = first;
    return new TemplateError(
      `variable '${name}' is not defined (in template at line ${line}); define it for this scope or ${fallback}`,
      [name],
      line,
    );
  }
  const listed = entries.map(([name, line]) => `'${name}' (line ${line})`).join(", ");
  return new TemplateError(
    `variables ${listed} are not defined (in template); define them for this scope or ${fallback}`,
    entries.map(([name]) => name),
    first?.[1],
  );
}

// ---------------------------------------------------------------------------------------
// Static analysis

function collectNames(nodes: readonly TemplateNode[], locals: ReadonlySet<string>, names: Set<string>): void {
  const reference = (name: string) => {
    if (!locals.has(name)) names.add(name);
  };
  for (const node of nodes) {
    switch (node.kind) {
      case "text":
        break;
      case "substitution":
        reference(node.name);
        break;
      case "conditional":
        reference(node.condition.name);
        collectNames(node.whenTrue, locals, names);
        collectNames(node.whenFalse, locals, names);
        break;
      case "loop":
        reference(node.list);
        collectNames(node.body, new Set([...locals, node.item, EACH_INDEX, EACH_FIRST, EACH_LAST]), names);
        break;
      default:
        unreachable(node);
    }
  }
}

function unreachable(value: never): never {
  throw new Error(`unexpected template node ${JSON.stringify(value)}`);
}
