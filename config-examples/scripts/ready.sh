#!/bin/sh
# Runs on every node before it becomes ready. $1 is the node's host name.
set -eu
echo "$1 is ready"
