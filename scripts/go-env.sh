# Shell functions for the scripts that build Go tools through the Go module
# proxy (helm, FerretDB): a go command new enough, installed when missing.
# Sourced; expects TOOLS (the tools cache) and a `log` function.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Prints the minor version of a go binary (e.g. 26 for go1.26.3).
go_minor() {
  "$1" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p'
}

# Prints the path of a go command able to build a module that asks for Go
# $1 (e.g. 1.26.0). Go >= 1.21 fetches the toolchain a module asks for by
# itself (GOTOOLCHAIN=auto, from the module proxy); an older one (Debian bookworm's golang-go is 1.19) cannot, so the toolchain
# module is fetched with it explicitly and unpacked under $TOOLS.
go_cmd() {
  local want="$1"
  local go
  go="$(command -v go || true)"
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
  if [ -z "$go" ]; then
    log "go not found: installing Debian's golang-go"
    apt_install golang-go
    go="$(command -v go)" || die "golang-go installed no go command"
  fi
  local minor
  minor="$(go_minor "$go")"
  [ -n "$minor" ] || die "cannot tell the version of $go"
  if [ "$minor" -ge 21 ]; then
    echo "$go"
    return
  fi
  local root="$TOOLS/go$want"
  if [ ! -x "$root/bin/go" ]; then
    log "$go is too old; fetching the go$want toolchain module"
    local arch mod dir tmp
    case "$(uname -m)" in
      x86_64) arch=amd64 ;;
      aarch64 | arm64) arch=arm64 ;;
      *) die "unsupported machine $(uname -m)" ;;
    esac
    mod="golang.org/toolchain@v0.0.1-go$want.linux-$arch"
    tmp="$(mktemp -d)"
    (cd "$tmp" && GO111MODULE=on GOFLAGS=-mod=mod "$go" mod download -json "$mod") > "$tmp/dl.json"
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' "$tmp/dl.json")"
    [ -d "$dir" ] || die "downloading $mod failed"
    rm -rf "$root.partial"
    cp -r "$dir" "$root.partial"
    chmod -R u+w "$root.partial"
    # Module zips keep no file modes.
    chmod +x "$root.partial"/bin/* "$root.partial"/pkg/tool/*/*
    mv "$root.partial" "$root"
    rm -rf "$tmp"
  fi
  echo "$root/bin/go"
}
