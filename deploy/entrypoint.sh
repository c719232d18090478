#!/bin/sh
# The image's entry point: `handsoff ARGS...`.
#
# A node on PostgreSQL reads its database password from the variable its node.json names
# (`node init --pg-password-env HANDSOFF_PG_PASSWORD`). In a container that password arrives
# as a file (a compose secret): HANDSOFF_PG_PASSWORD_FILE names it, and it is read here, so
# no password is written in the compose file, the image or `docker inspect`.
set -eu
if [ -n "${HANDSOFF_PG_PASSWORD_FILE:-}" ]; then
    HANDSOFF_PG_PASSWORD="$(cat "${HANDSOFF_PG_PASSWORD_FILE}")"
    export HANDSOFF_PG_PASSWORD
fi
exec handsoff "$@"
