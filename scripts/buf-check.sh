#!/usr/bin/env bash
# Checks the protobuf contract (proto/ocx/v1/*.proto) with buf, as configured by buf.yaml at the
# repository root:
#   1. `buf lint`: the STANDARD rules and the COMMENTS rules (every service, RPC, message, field,
#      enum, enum value and oneof has a comment).
#   2. `buf breaking` (FILE rules): the working tree's protos against a baseline commit, so that a
#      change that would break existing clients (a renumbered, retyped or removed field, a
#      renamed RPC, ...) fails loudly.
#
#   bash scripts/buf-check.sh
#
# Baseline for `buf breaking`, in this order:
#   - OCX_BUF_AGAINST, if set: any git revision (e.g. `origin/main`, a release tag, a SHA).
#   - The merge base with main (origin/main, else main) when HEAD is on a branch ahead of it:
#     a feature branch is judged against the contract clients have (main), so a break made in
#     an earlier commit of the branch is not missed, as it would be against HEAD~1.
#   - Otherwise (HEAD is on main, or detached at a commit of main, as in CI's fresh clone):
#     HEAD~1, the previous commit on main. The working tree is compared, so uncommitted changes
#     are checked too, together with the last commit's.
# With no such commit (a single-commit or depth-1 clone) the breaking check is skipped with a
# warning; OCX_BUF_REQUIRE_BREAKING=1 makes that an error instead.
# The baseline needs no buf.yaml of its own: it is read as `<git dir>#ref=<sha>,subdir=proto`.
#
# Uses `buf` from PATH if it is the pinned version; otherwise installs the pinned @bufbuild/buf
# with npm into a temporary directory (removed on exit). OCX_BUF_INSTALL=1 installs it even if a
# buf is on PATH. Needs git, and npm (Node.js 18+) unless the pinned buf is on PATH.
set -euo pipefail

BUF_VERSION=1.75.0 # @bufbuild/buf on npm; keep in step with the lint rules in buf.yaml

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STARTED=$(date +%s)
TMP=
cleanup() {
    local rc=$?
    if [[ -n $TMP ]]; then
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    printf 'buf-check: FAIL: %s\n' "$*" >&2
    exit 1
}

# --- buf ------------------------------------------------------------------------------------
BUF=
if [[ ${OCX_BUF_INSTALL:-0} != 1 ]] && command -v buf >/dev/null 2>&1; then
    found=$(buf --version 2>/dev/null || true)
    if [[ $found == "$BUF_VERSION" ]]; then
        BUF=$(command -v buf)
    else
        printf 'buf-check: buf on PATH is %s, not the pinned %s: installing the pinned one\n' \
            "${found:-unknown}" "$BUF_VERSION"
    fi
fi
if [[ -z $BUF ]]; then
    command -v npm >/dev/null 2>&1 ||
        die "buf $BUF_VERSION is not on PATH and npm is not installed to fetch it (install Node.js, or buf $BUF_VERSION)"
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/ocx-buf.XXXXXX")
    printf 'buf-check: installing @bufbuild/buf@%s with npm into %s\n' "$BUF_VERSION" "$TMP"
    npm install --prefix "$TMP" --no-audit --no-fund --no-save --loglevel=error \
        "@bufbuild/buf@$BUF_VERSION" >"$TMP/npm.log" 2>&1 ||
        { cat "$TMP/npm.log" >&2; die "npm install @bufbuild/buf@$BUF_VERSION failed"; }
    BUF=$TMP/node_modules/.bin/buf
fi
got=$("$BUF" --version 2>&1) || die "$BUF does not run: $got"
[[ $got == "$BUF_VERSION" ]] || die "$BUF is version $got, expected $BUF_VERSION"
printf 'buf-check: buf %s\n' "$got"

# --- lint -----------------------------------------------------------------------------------
printf '\n==> buf lint (STANDARD + COMMENTS, see buf.yaml)\n'
if ! "$BUF" lint; then
    die "buf lint found problems (above): fix the .proto files, or justify an exception in buf.yaml"
fi
printf 'buf-check: lint ok (%s files)\n' "$("$BUF" ls-files | wc -l | tr -d ' ')"

# --- breaking -------------------------------------------------------------------------------
printf '\n==> buf breaking (FILE rules) against the baseline\n'
commit_of() { git rev-parse --verify --quiet "$1^{commit}" 2>/dev/null; }

git rev-parse --git-dir >/dev/null 2>&1 || die "not a git repository: cannot find a baseline"
BASE=
WHY=
if [[ -n ${OCX_BUF_AGAINST:-} ]]; then
    BASE=$(commit_of "$OCX_BUF_AGAINST") || die "OCX_BUF_AGAINST=$OCX_BUF_AGAINST is not a commit here"
    WHY="OCX_BUF_AGAINST=$OCX_BUF_AGAINST"
else
    head=$(git rev-parse HEAD)
    for main in refs/remotes/origin/main refs/heads/main; do
        if commit_of "$main" >/dev/null; then
            fork=$(git merge-base HEAD "$main" 2>/dev/null || true)
            if [[ -n $fork && $fork != "$head" ]]; then
                BASE=$fork
                WHY="the merge base with ${main#refs/*/}"
            fi
            break
        fi
    done
    if [[ -z $BASE ]] && BASE=$(commit_of HEAD~1); then
        WHY="HEAD~1, the previous commit"
    fi
fi

if [[ -z $BASE ]]; then
    msg="no baseline commit (single-commit or shallow clone?): cannot check for breaking changes"
    [[ ${OCX_BUF_REQUIRE_BREAKING:-0} == 1 ]] && die "$msg"
    printf 'buf-check: WARNING: %s; skipped\n' "$msg" >&2
else
    if [[ -z $(git ls-tree --name-only "$BASE" -- proto/) ]]; then
        printf 'buf-check: baseline %s has no proto/: nothing to break\n' "$(git rev-parse --short "$BASE")"
    else
        GIT_DIR_ABS=$(git rev-parse --path-format=absolute --git-common-dir)
        printf 'buf-check: working tree against %s (%s)\n' \
            "$(git log -1 --format='%h %s' "$BASE" | cut -c1-80)" "$WHY"
        if ! "$BUF" breaking proto --against "$GIT_DIR_ABS#ref=$BASE,subdir=proto"; then
            die "breaking changes to the contract (above) against $(git rev-parse --short "$BASE"): clients built on it would break. Add new fields/RPCs instead of changing or removing old ones (reserve removed numbers and names)"
        fi
        printf 'buf-check: no breaking changes\n'
    fi
fi

printf '\nbuf-check: passed in %ss\n' "$(($(date +%s) - STARTED))"
