#!/usr/bin/env bash
# Makes tests/fixtures/pre-pairing/: a database written by the release before the pairing state
# of reconciliation (commit 9f35cb3), with the answers that release gave, for the migration test
# (tests/tests/it/migration.rs). Runs that file's `make_the_pre_pairing_fixture` in a worktree
# of the old commit, with its own target directory. Takes a few minutes (a debug build). Needs
# the sqlite3 shell.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
release=${OCX_FIXTURE_RELEASE:-9f35cb3}
worktree=$(mktemp -d "${TMPDIR:-/tmp}/ocx-fixture.XXXXXX")
trap 'git -C "$root" worktree remove --force "$worktree" 2>/dev/null || true' EXIT
git worktree add --detach "$worktree" "$release" > /dev/null
cp tests/tests/it/migration.rs "$worktree/tests/tests/it/migration.rs"
echo 'mod migration;' >> "$worktree/tests/tests/it/main.rs"
out="$root/tests/fixtures/pre-pairing"
rm -rf "$out"
(cd "$worktree" && OCX_FIXTURE_OUT="$out" CARGO_TARGET_DIR="${OCX_FIXTURE_TARGET:-$worktree/target}" \
    cargo test -p ocx-e2e --test it migration::make_the_pre_pairing_fixture -- --ignored --exact)
# One file: the write-ahead log folded in (the sqlite3 shell), the free pages dropped.
sqlite3 "$out/ocx.db" 'PRAGMA wal_checkpoint(TRUNCATE); VACUUM;'
rm -f "$out/ocx.db-wal" "$out/ocx.db-shm"
ls -l "$out"
