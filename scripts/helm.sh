#!/usr/bin/env bash
# Offline tooling for the Helm chart in helm/weir (see docs/kubernetes.md).
#
#   scripts/helm.sh install              helm and kubernetes-validate, cached;
#                                        prints the helm path on its last line
#   scripts/helm.sh check                lint, render and validate the chart with
#                                        its default values and every
#                                        helm/weir/ci/*.yaml; every
#                                        helm/weir/ci/bad/*.yaml must be refused
#   scripts/helm.sh render [VALUES...]   `helm template weir helm/weir -f ...`
#
# Tools live under $HOME/.cache/weir/tools: helm is built from source with
# `go install` through the Go module proxy (no release download), and
# kubernetes-validate (Kubernetes' OpenAPI schemas, bundled) comes from PyPI
# into a venv. No cluster is needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=3.22.0
# The Go release helm's go.mod asks for (its `go` line).
HELM_GO=1.26.0
KV_VERSION=1.37.0
# The Kubernetes version rendered manifests are validated against.
KUBE_VERSION=1.33.0

TOOLS="$HOME/.cache/weir/tools"
HELM="$TOOLS/bin/helm"
KV_VENV="$TOOLS/kv-venv"
KV="$KV_VENV/bin/kubernetes-validate"
CHART=helm/weir
RELEASE=weir

log() { echo "helm.sh: $*" >&2; }
# shellcheck source=scripts/go-env.sh
. scripts/go-env.sh
die() { log "$*"; exit 1; }

helm_ok() {
  [ -x "$HELM" ] || return 1
  local v
  v="$("$HELM" version --template '{{.Version}}' 2>/dev/null)" || return 1
  [[ "$v" == "v${HELM_VERSION%.*}"* ]] || return 1
  # The exact module version, when a go command can read the binary's build info.
  if command -v go >/dev/null; then
    v="$(go version -m "$HELM" 2>/dev/null)" || return 1
    grep -q "helm.sh/helm/v3[[:space:]]*v$HELM_VERSION" <<< "$v" || return 1
  fi
}

install_helm() {
  helm_ok && return
  local go
  go="$(go_cmd "$HELM_GO")"
  log "building helm v$HELM_VERSION with $go (a few minutes on first run)"
  mkdir -p "$TOOLS/bin"
  # Build outside the repository, so that no go.mod nearby matters.
  (cd "$TOOLS" && GOBIN="$TOOLS/bin" GOTOOLCHAIN="go$HELM_GO+auto" GOFLAGS='' \
    "$go" install "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION") >&2
  helm_ok || die "helm at $HELM is not v$HELM_VERSION after building it"
}

install_kv() {
  if [ -x "$KV" ] && [ "$("$KV" --version 2>/dev/null)" = "$KV_VERSION" ]; then
    return
  fi
  command -v python3 >/dev/null || apt_install python3
  if [ ! -x "$KV_VENV/bin/python" ]; then
    rm -rf "$KV_VENV"
    if ! python3 -m venv "$KV_VENV" >&2 2>/dev/null; then
      log "python3 -m venv failed: installing Debian's python3-venv"
      rm -rf "$KV_VENV"
      apt_install python3-venv
      python3 -m venv "$KV_VENV" >&2
    fi
  fi
  log "installing kubernetes-validate $KV_VERSION"
  "$KV_VENV/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" >&2
  [ -x "$KV" ] || die "kubernetes-validate did not install into $KV_VENV"
}

cmd_install() {
  mkdir -p "$TOOLS/bin"
  install_helm
  install_kv
  echo "$HELM"
}

# helm template of the chart with the given values files.
render() {
  local args=()
  local f
  for f in "$@"; do args+=(-f "$f"); done
  "$HELM" template "$RELEASE" "$CHART" "${args[@]}"
}

cmd_render() {
  cmd_install >/dev/null
  render "$@"
}

cmd_check() {
  cmd_install >/dev/null
  local failures=() out rc f label
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT

  local cases=("")
  for f in "$CHART"/ci/*.yaml; do
    [ -e "$f" ] && cases+=("$f")
  done

  for f in "${cases[@]}"; do
    label="${f:-default values}"
    local vals=()
    [ -n "$f" ] && vals=(-f "$f")

    echo "== lint: $label"
    if ! out="$("$HELM" lint --strict "$CHART" "${vals[@]}" 2>&1)"; then
      echo "$out"
      echo "FAIL lint: $label"
      failures+=("lint $label")
      continue
    fi

    echo "== template + kubernetes-validate $KUBE_VERSION: $label"
    if ! "$HELM" template "$RELEASE" "$CHART" "${vals[@]}" > "$tmp/rendered.yaml" 2> "$tmp/err"; then
      cat "$tmp/err"
      echo "FAIL template: $label"
      failures+=("template $label")
      continue
    fi
    rc=0
    out="$("$KV" --strict -k "$KUBE_VERSION" "$tmp/rendered.yaml" 2>&1)" || rc=$?
    # Kinds outside the core schemas (the Prometheus Operator's ServiceMonitor)
    # cannot be checked here: reported, not failed.
    local passed skipped errors
    passed="$(grep -c ' passed for resource ' <<< "$out" || true)"
    skipped="$(grep "Couldn't find schema for kind" <<< "$out" | sed 's/.*for kind \([^ ]*\) with api version \([^ ]*\).*/\1 (\2)/' | sort -u | paste -sd, - || true)"
    errors="$(grep -E '^(ERROR|CRITICAL)' <<< "$out" | sed "s|$tmp/rendered.yaml|$label|" || true)"
    echo "   $passed resources valid${skipped:+; skipped, no core schema: $skipped}"
    if [ "$rc" -ne 0 ] || [ -n "$errors" ]; then
      echo "${errors:-$out}"
      echo "FAIL kubernetes-validate: $label"
      failures+=("kubernetes-validate $label")
    fi
  done

  # Invalid values: both lint and template must refuse them, naming the key.
  # Each file says what the error must mention in a `# expect: TEXT` line.
  for f in "$CHART"/ci/bad/*.yaml; do
    [ -e "$f" ] || continue
    local expect
    expect="$(sed -n 's/^# expect: //p' "$f" | head -n 1)"
    echo "== must be refused: $f${expect:+ (mentioning: $expect)}"
    if [ -z "$expect" ]; then
      echo "FAIL $f has no '# expect: TEXT' line"
      failures+=("bad $f: no expect line")
      continue
    fi
    local step
    for step in lint template; do
      rc=0
      if [ "$step" = lint ]; then
        out="$("$HELM" lint "$CHART" -f "$f" 2>&1)" || rc=$?
      else
        out="$("$HELM" template "$RELEASE" "$CHART" -f "$f" 2>&1)" || rc=$?
      fi
      if [ "$rc" -eq 0 ]; then
        echo "FAIL helm $step accepted $f"
        failures+=("bad $f accepted by $step")
      elif ! grep -qF -- "$expect" <<< "$out"; then
        echo "$out"
        echo "FAIL helm $step refused $f without mentioning: $expect"
        failures+=("bad $f: $step message")
      else
        echo "   helm $step refused it: $(grep -F -- "$expect" <<< "$out" | head -n 1 | sed 's/^[[:space:]]*//')"
      fi
    done
  done

  echo
  if [ "${#failures[@]}" -gt 0 ]; then
    echo "helm check: ${#failures[@]} failure(s):"
    printf '  %s\n' "${failures[@]}"
    return 1
  fi
  echo "helm check: all passed (${#cases[@]} values sets valid, $(find "$CHART/ci/bad" -name '*.yaml' | wc -l) invalid ones refused)"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  check) shift; cmd_check "$@" ;;
  render) shift; cmd_render "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
