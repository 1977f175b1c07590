#!/usr/bin/env bash
# What the tests need on a Debian machine, installed and started when missing: the first
# step of `cargo xtask ci`. Installs Debian's libpq-dev and postgresql (the PostgreSQL
# store and its tests), openssh-server (the SSH client is tested against a real sshd),
# default-libmysqlclient-dev and pkg-config (the MySQL store, built with --all-features),
# mariadb-server when no MariaDB answers on 127.0.0.1:3306, and rustfmt and clippy.
# Installing needs root (or sudo without a password); without it, what is missing is named
# and, outside CI, the tests that need it skip with a note.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}

cannot() {
  echo "setup: $1" >&2
  if [ "${CI:-}" = true ]; then
    exit 1
  fi
  echo "setup: going on; the tests that need it are skipped (CI=true makes this a failure)" >&2
}

# The toolchain must have rustfmt and clippy.
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "${component}"
  fi
done

missing=()
dpkg -s libpq-dev >/dev/null 2>&1 || missing+=(libpq-dev)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
dpkg -s default-libmysqlclient-dev >/dev/null 2>&1 || missing+=(default-libmysqlclient-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; then
  command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if ! { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; }; then
    cannot "cannot install ${missing[*]} (needs root): apt-get install ${missing[*]}"
  fi
fi

# PostgreSQL on 127.0.0.1:5432.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  cluster=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -n "${cluster}" ]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "${cluster}" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break
    sleep 1
  done
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || cannot "no PostgreSQL answers on 127.0.0.1:5432"
fi

# MariaDB on 127.0.0.1:3306, root without a password.
if ! mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; then
  as_root service mariadb start >/dev/null 2>&1 || as_root service mysql start >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do
    mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1 && break
    sleep 1
  done
fi
# A freshly installed Debian MariaDB lets root in by its Unix socket only; the tests log in
# over TCP as root without a password, so allow that once.
if mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1 \
  && ! mysql -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; then
  as_root mysql -u root -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" || true
fi
mysql -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1 \
  || cannot "no MariaDB lets root in without a password on 127.0.0.1:3306"
echo "setup: PostgreSQL, MariaDB, sshd and the build's libraries are ready" >&2
