#!/bin/sh
# Runs on a template server before it is snapshotted. $1 is the server's host name.
set -eu
echo "preparing $1"
sudo apt-get -q update
sudo apt-get -qy install git python3
