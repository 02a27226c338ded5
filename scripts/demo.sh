#!/usr/bin/env bash
# Opens the clara workbench on the demo workspace, building it on first run.
source "$(dirname "$0")/env.sh"
exec .venv/bin/clara "$@"
