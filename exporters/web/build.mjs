// Bundle the viewer (src/main.js and its pinned npm dependencies) into ONE classic script,
// assets/viewer.js (esbuild IIFE: file:// pages cannot load ES modules), and gather the licence
// texts of every package that went into it into assets/THIRD_PARTY_LICENSES.txt.
// Run by tools/setup.sh after `npm ci` here: node build.mjs
import { build } from "esbuild";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "assets");
mkdirSync(out, { recursive: true });
const result = await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "iife",
  minify: true,
  target: "es2020",
  legalComments: "eof",
  metafile: true,
  logLevel: "warning",
  outfile: join(out, "viewer.js"),
});

// the npm packages whose files the bundle holds (node_modules/<name> or <@scope>/<name>)
const pkgs = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) pkgs.add(m[1]);
}
// and their own dependencies: Spark's prebuilt dist inlines fflate (and its WASM)
for (const name of [...pkgs]) {
  const meta = JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));
  for (const dep of Object.keys(meta.dependencies || {})) {
    if (existsSync(join(here, "node_modules", dep, "package.json"))) pkgs.add(dep);
  }
}
const parts = [
  "Third-party software bundled in viewer.js (worldgen's web viewer).\n" +
    "worldgen's own viewer code is Apache-2.0; the packages below keep their licences.\n",
];
for (const name of [...pkgs].sort()) {
  const dir = join(here, "node_modules", name);
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const lic = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
  if (!lic) throw new Error(`${name}: no licence file in its package`);
  parts.push(
    `${"=".repeat(78)}\n${name} ${meta.version} (${meta.license})\n` +
      `${meta.homepage || (meta.repository && (meta.repository.url || meta.repository)) || ""}\n` +
      `${"-".repeat(78)}\n${readFileSync(join(dir, lic), "utf8").trim()}\n`,
  );
}
writeFileSync(join(out, "THIRD_PARTY_LICENSES.txt"), parts.join("\n"));
console.log(`viewer.js: ${[...pkgs].sort().join(", ")}`);
if (!existsSync(join(out, "viewer.js"))) process.exit(1);
