/**
 * JSON schemas into GBNF grammars (llama.cpp's grammar format, start rule `root`), so a sampler
 * constrained by the grammar can only produce JSON that validates against the schema. Our own
 * converter of the subset structured-output clients send (OpenAI's strict mode is a subset of
 * it): type (one or a list), properties / required / additionalProperties, items / minItems /
 * maxItems, enum, const, anyOf / oneOf, minLength / maxLength of strings, $ref into $defs or
 * definitions (recursion included), and annotations (title, description, default, examples...).
 * A keyword that would constrain the value in a way the grammar cannot (pattern, format, minimum,
 * multipleOf, ...) is refused with SchemaError naming its path, never dropped: a client asking for
 * a constraint must not get output that ignores it.
 *
 * Properties are generated in the order the schema lists them, required ones first, so the model
 * writes a fixed key order (what OpenAI's strict mode does too).
 */

export class SchemaError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

type Schema = Record<string, unknown>;

const ANNOTATIONS = new Set(["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "strict"]);
const HANDLED = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "minLength",
  "maxLength",
  "$ref",
  "$defs",
  "definitions",
]);

/** Whitespace between tokens: none, one space, or a newline and some indentation (never unbounded). */
const PRIMITIVES: Record<string, string> = {
  ws: '| " " | "\\n" [ \\t]{0,20}',
  string: '"\\"" char* "\\""',
  char: '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
  integer: '"-"? ("0" | [1-9] [0-9]{0,15})',
  number: 'integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
  boolean: '"true" | "false"',
  null: '"null"',
  value: "object | array | string | number | boolean | null",
  object: '"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"',
  array: '"[" ws ( value ( ws "," ws value )* ws )? "]"',
};

/** A GBNF literal matching exactly `text`. */
export function gbnfLiteral(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t")}"`;
}

/** An integer keyword in [min, max], or undefined when absent. */
function boundedInt(v: unknown, min: number, max: number, path: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw new SchemaError(path, `${path} must be an integer ${min}..${max}`);
  return v;
}

const isSchema = (v: unknown): v is Schema => typeof v === "object" && v !== null && !Array.isArray(v);

export class GrammarBuilder {
  private readonly rules = new Map<string, string>();
  private readonly used = new Set<string>();
  private readonly refs = new Map<string, string>();

  private scope = "";

  constructor(private rootSchema: Schema = {}) {}

  /** value() for a schema whose $refs point into `root` (another document than the builder's), named apart by `scope`. */
  valueIn(root: Schema, schema: unknown, path: string, scope: string): string {
    const saved = [this.rootSchema, this.scope] as const;
    [this.rootSchema, this.scope] = [root, scope];
    try {
      return this.value(schema, path);
    } finally {
      [this.rootSchema, this.scope] = saved;
    }
  }

  /** A rule name for `body` (reused when the same body was added before). */
  rule(hint: string, body: string): string {
    for (const [name, b] of this.rules) if (b === body) return name;
    const base = hint.replace(/[^a-zA-Z0-9-]+/g, "-").replace(/^-+|-+$/g, "").toLowerCase() || "r";
    let name = base;
    for (let i = 1; this.rules.has(name) || name in PRIMITIVES || name === "root"; i++) name = `${base}-${i}`;
    this.rules.set(name, body);
    return name;
  }

  private primitive(name: string): string {
    this.used.add(name);
    if (name === "number") this.used.add("integer");
    if (name === "string") this.used.add("char");
    if (["value", "object", "array"].includes(name)) for (const n of Object.keys(PRIMITIVES)) this.used.add(n);
    this.used.add("ws");
    return name;
  }

  /** The GBNF expression for a value matching `schema` at `path`. */
  value(schema: unknown, path: string): string {
    if (schema === true || (isSchema(schema) && Object.keys(schema).every((k) => ANNOTATIONS.has(k)))) return this.primitive("value");
    if (!isSchema(schema)) throw new SchemaError(path, `${path} must be a schema object`);
    for (const key of Object.keys(schema)) {
      if (!HANDLED.has(key) && !ANNOTATIONS.has(key)) throw new SchemaError(`${path}.${key}`, `the JSON schema keyword '${key}' (at ${path}) is not supported in structured output`);
    }
    return this.combined(schema, path) ?? this.ofType(schema, path);
  }

  /** $ref, const, enum, anyOf / oneOf: undefined when the schema has none of them. */
  private combined(schema: Schema, path: string): string | undefined {
    if (typeof schema.$ref === "string") return this.ref(schema.$ref, path);
    if (schema.const !== undefined) return gbnfLiteral(JSON.stringify(schema.const));
    if (Array.isArray(schema.enum)) return this.alternatives(schema.enum.map((v) => gbnfLiteral(JSON.stringify(v))), path);
    const union = (schema.anyOf ?? schema.oneOf) as unknown;
    if (union === undefined) return undefined;
    if (!Array.isArray(union) || union.length === 0) throw new SchemaError(path, `${path}.anyOf must be a non-empty array`);
    return this.alternatives(union.map((s, i) => this.value(s, `${path}.anyOf[${i}]`)), path);
  }

  /** By `type` (one or a list), or by the keywords present when there is none. */
  private ofType(schema: Schema, path: string): string {
    const type = schema.type ?? (schema.properties !== undefined ? "object" : schema.items !== undefined ? "array" : undefined);
    if (type === undefined) return this.primitive("value");
    if (Array.isArray(type)) return this.alternatives(type.map((t: unknown) => this.typed(schema, t, path)), path);
    return this.typed(schema, type, path);
  }

  private alternatives(exprs: string[], path: string): string {
    if (exprs.length === 1) return exprs[0]!;
    return this.rule(path, exprs.map((e) => `( ${e} )`).join(" | "));
  }

  private typed(schema: Schema, type: unknown, path: string): string {
    switch (type) {
      case "object":
        return this.object(schema, path);
      case "array":
        return this.array(schema, path);
      case "string":
        return this.string(schema, path);
      case "number":
      case "integer":
      case "boolean":
      case "null":
        return this.primitive(type);
      default:
        throw new SchemaError(`${path}.type`, `${path}.type '${String(type)}' is not a JSON schema type`);
    }
  }

  private string(schema: Schema, path: string): string {
    const min = boundedInt(schema.minLength, 0, 10_000, `${path}.minLength`);
    const max = boundedInt(schema.maxLength, min ?? 0, 10_000, `${path}.maxLength`);
    if (min === undefined && max === undefined) return this.primitive("string");
    this.primitive("string");
    return this.rule(`${path}-string`, `"\\"" char{${min ?? 0},${max ?? ""}} "\\""`);
  }

  private array(schema: Schema, path: string): string {
    const item = schema.items === undefined ? this.primitive("value") : this.value(schema.items, `${path}.items`);
    const min = boundedInt(schema.minItems, 0, 1000, `${path}.minItems`) ?? 0;
    const max = boundedInt(schema.maxItems, min, 1000, `${path}.maxItems`);
    this.primitive("ws");
    if (max === 0) return this.rule(`${path}-array`, '"[" ws "]"');
    const more = `( ws "," ws ${item} ){${Math.max(0, min - 1)},${max === undefined ? "" : max - 1}}`;
    const list = `${item} ${more}`;
    return this.rule(`${path}-array`, min > 0 ? `"[" ws ${list} ws "]"` : `"[" ws ( ${list} ws )? "]"`);
  }

  private object(schema: Schema, path: string): string {
    const props = schema.properties;
    if (props === undefined) return this.primitive("object");
    if (!isSchema(props)) throw new SchemaError(`${path}.properties`, `${path}.properties must be an object`);
    const required = (schema.required ?? []) as unknown;
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string" || !(r in props))) {
      throw new SchemaError(`${path}.required`, `${path}.required must list names of ${path}.properties`);
    }
    this.primitive("ws");
    const kv = (name: string): string => `${gbnfLiteral(JSON.stringify(name))} ws ":" ws ${this.value(props[name], `${path}.properties.${name}`)}`;
    const req = Object.keys(props).filter((k) => required.includes(k));
    const opt = Object.keys(props).filter((k) => !required.includes(k));
    // tail(i): the optional properties from i on, each present or not, each after a comma.
    let tail = "";
    for (let i = opt.length - 1; i >= 0; i--) tail = this.rule(`${path}-tail`, `( ws "," ws ${kv(opt[i]!)} )? ${tail}`.trim());
    let body: string;
    if (req.length > 0) body = `${req.map(kv).join(' ws "," ws ')} ${tail}`;
    else if (opt.length === 0) body = "";
    else {
      // No required property: the first one present starts the list, the later ones follow it.
      const firsts = opt.map((name, i) => {
        let rest = "";
        for (let j = opt.length - 1; j > i; j--) rest = this.rule(`${path}-tail`, `( ws "," ws ${kv(opt[j]!)} )? ${rest}`.trim());
        return `${kv(name)} ${rest}`.trim();
      });
      body = `( ${this.rule(`${path}-first`, firsts.map((f) => `( ${f} )`).join(" | "))} )?`;
    }
    return this.rule(`${path}-object`, `"{" ws ${body.trim()} ws "}"`.replace(/ {2,}/g, " "));
  }

  private ref(ref: string, path: string): string {
    const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
    const target = m ? (this.rootSchema[m[1]!] as Schema | undefined)?.[m[2]!] : undefined;
    if (!m || target === undefined) throw new SchemaError(`${path}.$ref`, `${path}.$ref '${ref}' does not name a schema in $defs or definitions`);
    const key = `${this.scope}${ref}`;
    const known = this.refs.get(key);
    if (known) return known;
    // The name is taken before the body is built, so a recursive schema refers to itself.
    const name = this.rule(`${this.scope}ref-${m[2]}`, `__pending ${key}`);
    this.refs.set(key, name);
    this.rules.set(name, this.value(target, `${m[1]}.${m[2]}`));
    return name;
  }

  /** The whole grammar with `root ::= rootExpr`. */
  grammar(rootExpr: string): string {
    const lines = [`root ::= ${rootExpr}`];
    for (const [name, body] of this.rules) lines.push(`${name} ::= ${body}`);
    for (const name of Object.keys(PRIMITIVES)) if (this.used.has(name)) lines.push(`${name} ::= ${PRIMITIVES[name]}`);
    return `${lines.join("\n")}\n`;
  }
}

/** A grammar for JSON text matching `schema` (SchemaError when the schema asks for what it cannot express). */
export function jsonSchemaGrammar(schema: Record<string, unknown>): string {
  const b = new GrammarBuilder(schema);
  return b.grammar(b.value(schema, "schema"));
}

/** Any JSON object (response_format json_object). */
export const JSON_OBJECT_GRAMMAR = jsonSchemaGrammar({ type: "object" });
