#!/bin/sh
# Entrypoint of the workspace image (the offline build and the Dockerfile
# alike). It runs as the image's user, coder (uid 1000), with every
# capability dropped and no-new-privileges, so it never uses sudo, su or
# chown: it only prepares what it can write.
#
# The whole home, /home/coder, may be a volume. A fresh volume is empty (or
# has only what Docker copied from the image), so everything code-server and
# the student need under it is created here when missing; nothing that
# exists is overwritten (the student's settings, extensions and files win).
set -eu
HOME="${HOME:-/home/coder}"
export HOME
if ! [ -d "$HOME" ] || ! [ -w "$HOME" ]; then
  echo "entrypoint: $HOME is not writable by uid $(id -u); give the volume to $(id -u):$(id -g)" >&2
  exit 70
fi
data="$HOME/.local/share/code-server"
mkdir -p "$HOME/project" "$HOME/.config/code-server" "$data/User" "$data/extensions"
# Defaults for a first start only: the student's home is their own folder, so
# the workspace-trust prompt is noise, and the welcome page hides the files.
if ! [ -e "$data/User/settings.json" ]; then
  cat >"$data/User/settings.json" <<'EOF'
{
  "security.workspace.trust.enabled": false,
  "workbench.startupEditor": "none",
  "telemetry.telemetryLevel": "off"
}
EOF
fi
# Images built from skeleton files (.bashrc, .profile) keep a copy in
# /etc/skel; an empty home volume gets them once.
for file in .bashrc .profile .bash_logout; do
  if [ -e "/etc/skel/$file" ] && ! [ -e "$HOME/$file" ]; then cp "/etc/skel/$file" "$HOME/$file"; fi
done
# dumb-init forwards signals to code-server and reaps zombies when the
# container runs without --init. code-server runs in one process where the
# image has our launcher (one-process.js says why: half the CPU and memory
# of code-server's own two-process start).
launcher=/usr/lib/apranova/code-server-one-process.js
if [ -e "$launcher" ]; then
  exec dumb-init /usr/lib/code-server/lib/node "$launcher" "$@"
fi
exec dumb-init /usr/bin/code-server "$@"
