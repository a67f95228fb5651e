"use strict";
// code-server in one process instead of two (the entrypoint runs this).
//
// code-server's own entry (out/node/entry.js) starts a parent process that
// loads code-server's whole module graph (about 490 modules: express, the
// routes, the CLI) only to fork a child that loads it all again and serves.
// The parent restarts the child on SIGUSR1/2 (an in-place update), copies
// its output to rotating log files under ~/.local/share/code-server, and
// gives it 10 s to answer a handshake. In a workspace container none of that
// is wanted: the container is the unit of restart (the server starts it
// again), its output goes to `docker logs`, and dumb-init is PID 1. On 2
// cores the parent doubled what a start costs: 0.74 -> 0.40 core-seconds to
// the first /healthz, 60 -> 31 MiB per idle workspace, and under a burst of
// starts the handshake's 10 s ran out ("error timed out", code 1).
//
// So this does what the child does, with the arguments the parent would
// have handed it: parse them as entry.js does (cli.js: flags, the config
// file, $PASSWORD taken out of the environment before anything is spawned),
// then mark this process as code-server's child (CODE_SERVER_PARENT_PID,
// itself: the child's watch on its parent always finds it alive) and run
// the server. Anything but a server start (--help, --version, extension
// commands, opening in a running instance) goes to code-server's own entry,
// unchanged.
const path = require("path");

const root = process.env.CODE_SERVER_ROOT || "/usr/lib/code-server";
const out = path.join(root, "out", "node");
const { parse, readConfigFile, setDefaults } = require(path.join(out, "cli"));
const NOT_A_SERVER = ["help", "version", "install-extension", "uninstall-extension", "list-extensions",
  "locate-extension", "reuse-window", "new-window"];

async function main() {
  const cliArgs = parse(process.argv.slice(2));
  if (NOT_A_SERVER.some((flag) => cliArgs[flag] !== undefined)) {
    require(path.join(out, "entry"));  // reads process.argv itself
    return;
  }
  const args = await setDefaults(cliArgs, await readConfigFile(cliArgs.config));
  process.env.CODE_SERVER_PARENT_PID = String(process.pid);  // before wrapper.js is loaded
  const { wrapper } = require(path.join(out, "wrapper"));
  const { runCodeServer } = require(path.join(out, "main"));
  wrapper.preventExit();
  const server = await runCodeServer(args);
  wrapper.onDispose(() => server.dispose());
}

main().catch((error) => {
  console.error(`code-server: ${error.message}`);
  process.exit(1);
});
