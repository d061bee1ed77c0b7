/**
 * The purity check of STYLE §2: code that must be deterministic (the Raft core, the
 * cluster-map state machine) may not read time, randomness or the environment, await, or
 * import IO; code that must stay platform-free (@hes/base) may not import `node:` modules or
 * touch `process` / `Buffer`. Enforced on the syntax tree, so comments and strings never trip it.
 *
 *   pnpm check:purity                      check every configured root
 *   tsx scripts/check-purity.ts FILE...    check files as deterministic code (for tests)
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import ts from "typescript";

export type Rule = "platform-free" | "deterministic";

/** A directory whose files must obey a rule. `required` roots must exist. */
interface Root {
  readonly dir: string;
  readonly rule: Rule;
  readonly required: boolean;
  /** Files (relative to dir) exempt, each with its reason. */
  readonly exempt?: Readonly<Record<string, string>>;
}

const ROOTS: readonly Root[] = [
  {
    dir: "packages/base/src",
    rule: "platform-free",
    required: true,
  },
  { dir: "packages/raft/src/core", rule: "deterministic", required: true },
  { dir: "packages/replication/src/cluster-map", rule: "deterministic", required: true },
  { dir: "packages/replication/src/placement", rule: "deterministic", required: true },
];

const NODE_BUILTINS = new Set([
  "fs",
  "fs/promises",
  "net",
  "tls",
  "os",
  "path",
  "child_process",
  "crypto",
  "http",
  "http2",
  "https",
  "dgram",
  "dns",
  "worker_threads",
  "cluster",
  "stream",
  "timers",
  "perf_hooks",
  "process",
]);
const PLATFORM_GLOBALS = new Set([
  "process",
  "Buffer",
  "require",
  "__dirname",
  "__filename",
  "global",
]);
const NONDETERMINISTIC_GLOBALS = new Set([
  "Date",
  "setTimeout",
  "setInterval",
  "setImmediate",
  "clearTimeout",
  "clearInterval",
  "clearImmediate",
  "queueMicrotask",
  "performance",
  "crypto",
  "fetch",
  "Promise",
  "WebAssembly",
  "SharedArrayBuffer",
  "Atomics",
]);
/** Imports a deterministic module may use besides relative paths. */
const DETERMINISTIC_IMPORTS = new Set(["@hes/base", "@bufbuild/protobuf", "@hes/proto"]);

export interface Violation {
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

/** Names declared in the file itself (so a local `Date` type or variable is not the global). */
function localNames(source: ts.SourceFile): Set<string> {
  const names = new Set<string>();
  const visit = (node: ts.Node): void => {
    if (
      (ts.isVariableDeclaration(node) ||
        ts.isFunctionDeclaration(node) ||
        ts.isClassDeclaration(node) ||
        ts.isInterfaceDeclaration(node) ||
        ts.isTypeAliasDeclaration(node) ||
        ts.isParameter(node) ||
        ts.isImportSpecifier(node) ||
        ts.isEnumDeclaration(node)) &&
      node.name !== undefined &&
      ts.isIdentifier(node.name)
    ) {
      names.add(node.name.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return names;
}

/** True when `node` is a name in a position that cannot refer to a global (x.name, {name: …}). */
function isMemberName(node: ts.Identifier): boolean {
  const parent = node.parent;
  return (
    (ts.isPropertyAccessExpression(parent) && parent.name === node) ||
    (ts.isPropertyAssignment(parent) && parent.name === node) ||
    (ts.isPropertyDeclaration(parent) && parent.name === node) ||
    (ts.isPropertySignature(parent) && parent.name === node) ||
    (ts.isMethodDeclaration(parent) && parent.name === node) ||
    (ts.isMethodSignature(parent) && parent.name === node) ||
    (ts.isQualifiedName(parent) && parent.right === node) ||
    (ts.isEnumMember(parent) && parent.name === node)
  );
}

/** Checks one file's text against `rule`. */
export function checkSource(file: string, text: string, rule: Rule): Violation[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
  const locals = localNames(source);
  const violations: Violation[] = [];
  const report = (node: ts.Node, message: string): void => {
    const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
    violations.push({ file, line: line + 1, message });
  };
  const forbidden = new Set(PLATFORM_GLOBALS);
  if (rule === "deterministic") for (const name of NONDETERMINISTIC_GLOBALS) forbidden.add(name);

  const visit = (node: ts.Node): void => {
    if (
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier !== undefined
    ) {
      const spec = (node.moduleSpecifier as ts.StringLiteral).text;
      if (spec.startsWith("node:") || NODE_BUILTINS.has(spec)) {
        report(node, `imports ${spec}: IO is not allowed here`);
      } else if (
        rule === "deterministic" &&
        !spec.startsWith(".") &&
        !DETERMINISTIC_IMPORTS.has(spec) &&
        !(ts.isImportDeclaration(node) && node.importClause?.isTypeOnly === true)
      ) {
        report(
          node,
          `imports ${spec}: only relative modules and ${[...DETERMINISTIC_IMPORTS].join(", ")}`,
        );
      }
    }
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      report(node, "dynamic import() is not allowed here");
    }
    if (
      ts.isIdentifier(node) &&
      forbidden.has(node.text) &&
      !isMemberName(node) &&
      !locals.has(node.text)
    ) {
      report(
        node,
        `uses ${node.text}: ${rule === "deterministic" ? "time, scheduling and the platform come in through injected interfaces" : "platform globals are not allowed in this package"}`,
      );
    }
    if (rule === "deterministic") {
      if (
        ts.isPropertyAccessExpression(node) &&
        ts.isIdentifier(node.expression) &&
        node.expression.text === "Math" &&
        node.name.text === "random"
      ) {
        report(node, "uses Math.random: randomness comes from the injected Prng");
      }
      if (ts.isAwaitExpression(node)) report(node, "awaits: the deterministic core never waits");
      if (
        (ts.isFunctionDeclaration(node) ||
          ts.isMethodDeclaration(node) ||
          ts.isArrowFunction(node) ||
          ts.isFunctionExpression(node)) &&
        node.modifiers?.some((m) => m.kind === ts.SyntaxKind.AsyncKeyword) === true
      ) {
        report(node, "declares an async function: the deterministic core never waits");
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return violations;
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path));
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

function main(): number {
  const root = new URL("..", import.meta.url).pathname;
  const args = process.argv.slice(2);
  const violations: Violation[] = [];
  if (args.length > 0) {
    for (const file of args)
      violations.push(...checkSource(file, readFileSync(file, "utf8"), "deterministic"));
  } else {
    for (const entry of ROOTS) {
      const dir = join(root, entry.dir);
      if (!existsSync(dir)) {
        if (entry.required)
          violations.push({ file: entry.dir, line: 0, message: "required pure root is missing" });
        else
          console.log(`purity: ${entry.dir} does not exist yet (${entry.rule}); nothing to check`);
        continue;
      }
      const files = filesUnder(dir).filter((f) => entry.exempt?.[relative(dir, f)] === undefined);
      for (const file of files) {
        violations.push(
          ...checkSource(relative(root, file), readFileSync(file, "utf8"), entry.rule),
        );
      }
      console.log(`purity: ${entry.dir}: ${files.length} files checked (${entry.rule})`);
    }
  }
  for (const v of violations) console.error(`${v.file}:${v.line}: ${v.message}`);
  if (violations.length > 0) console.error(`purity: ${violations.length} violation(s)`);
  return violations.length === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exit(main());
}
