# Sourced by scripts/demo and scripts/test (not run on its own).
#
# ensure_venv EXTRAS: make sure .venv exists and holds tagwall installed in editable mode with
# EXTRAS ("" or "test").  pip runs only when pyproject.toml changed since the last install or
# the extras asked for are not installed yet: the stamp .venv/.tagwall-installed holds
# "<sha256 of pyproject.toml> <extras>" ("test" includes everything "" installs).

ensure_venv() {
    local want="${1:-}" python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; tagwall needs Python 3.11 or later" >&2
        exit 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: tagwall needs Python 3.11 or later; $python is $("$python" -V 2>&1)" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $python -m venv" >&2
        if ! "$python" -m venv .venv >/dev/null 2>&1; then
            rm -rf .venv
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                echo "'$python -m venv' failed: installing python3-venv with apt-get" >&2
                apt-get update -qq >/dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                "$python" -m venv .venv
            else
                echo "error: '$python -m venv' failed; install python3-venv" \
                    "(e.g. sudo apt-get install python3-venv) and run this again" >&2
                exit 1
            fi
        fi
    fi
    local stamp=.venv/.tagwall-installed hash have_hash="" have_extras=""
    hash="$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' pyproject.toml)"
    if [ -f "$stamp" ]; then
        read -r have_hash have_extras <"$stamp" || true
    fi
    if [ "$have_hash" = "$hash" ] && { [ -z "$want" ] || [ "$have_extras" = "$want" ]; }; then
        return 0
    fi
    echo "installing tagwall into .venv: pip install -e '.${want:+[$want]}'" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${want:+[$want]}"
    echo "$hash $want" >"$stamp"
}

# ensure_system_packages: the Debian packages the data path, the lab and the benchmarks use
# (nftables and libnftables, iproute2, conntrack, iperf3, iptables for the legacy baseline;
# softflowd and pmacct as real flow exporters, nfdump's nfcapd as the ingest baseline),
# installed with apt-get when a command or library is missing.  Needs root; without it, says
# what is missing and goes on (the privileged tests then skip and say why).
ensure_system_packages() {
    local missing=()
    command -v nft >/dev/null 2>&1 || missing+=(nftables)
    [ -e /usr/lib/x86_64-linux-gnu/libnftables.so.1 ] || ldconfig -p 2>/dev/null | grep -q 'libnftables.so.1' || missing+=(libnftables1)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
    command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    command -v softflowd >/dev/null 2>&1 || missing+=(softflowd)
    command -v nfcapd >/dev/null 2>&1 || missing+=(nfdump)
    command -v pmacctd >/dev/null 2>&1 || missing+=(pmacct)
    [ "${#missing[@]}" = 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: missing ${missing[*]} (needs root and apt-get); the nftables data path" \
            "and the lab will not run" >&2
    fi
}
