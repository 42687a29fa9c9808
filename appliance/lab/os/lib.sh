# kpc lab OS: shell helpers shared by rc, install and node (sourced, busybox ash).
# Every line meant for a person starts with "kpc-labos:" so serial logs are easy to grep.

set -o pipefail

LAYOUT=/etc/kpc/layout      # OEM_START, OEM_SECTORS: where the install config lives on disk
. "$LAYOUT"

log() { echo "kpc-labos: $*"; }

# Stop here for good, saying why; the operator reads this in the serial log.
fail() {
  echo "kpc-labos: FAILED: $*"
  while :; do sleep 3600; done
}

# karg NAME [DEFAULT]: the value of NAME=... on the kernel command line.
karg() {
  for word in $(cat /proc/cmdline); do
    case "$word" in
      "$1="*) echo "${word#*=}"; return 0;;
    esac
  done
  echo "$2"
}

# The network interface with MAC $1 (aa:bb:.. or aa-bb-..), or the first non-loopback one.
pick_nic() {
  want=$(echo "$1" | tr 'A-F-' 'a-f:')
  tries=0
  while [ $tries -lt 100 ]; do
    for dev in /sys/class/net/*; do
      name=${dev##*/}
      [ "$name" = lo ] && continue
      if [ -z "$want" ] || [ "$(cat "$dev/address")" = "$want" ]; then
        echo "$name"
        return 0
      fi
    done
    usleep 100000
    tries=$((tries + 1))
  done
  return 1
}

# net_up MAC: bring up the NIC with that MAC over DHCP; sets NIC, MAC and ADDRESS.
net_up() {
  NIC=$(pick_nic "$1") || fail "no network interface${1:+ with MAC $1} (have: $(ls /sys/class/net))"
  MAC=$(cat "/sys/class/net/$NIC/address")
  ip link set lo up
  ip link set "$NIC" up
  mkdir -p /run/kpc
  rm -f /run/kpc/address
  udhcpc -i "$NIC" -s /usr/lib/kpc/udhcpc -t 10 -T 1 -A 2 -b -p /run/udhcpc.pid >/dev/null 2>&1
  waited=0
  while [ ! -s /run/kpc/address ]; do
    [ $waited -ge 600 ] && fail "no DHCP lease on $NIC ($MAC) after 60 s"
    usleep 100000
    waited=$((waited + 1))
  done
  ADDRESS=$(cat /run/kpc/address)
  log "network: $NIC $MAC $ADDRESS"
}

# fetch URL FILE: HTTP GET with a few retries.
fetch() {
  for attempt in 1 2 3 4 5; do
    wget -q -O "$2" "$1" && return 0
    sleep "$attempt"
  done
  return 1
}

# The bootcfg URLs to report to: BASE (where this boot came from) first, then the other
# deploy hosts' (kpc.bootcfg.also=URL,URL on the kernel command line, or the installed
# system's KPC_BOOTCFG_ALSO). bootcfgs BASE ALSO prints them, one a line.
bootcfgs() {
  echo "$1"
  for other in $(echo "$2" | tr , ' '); do [ "$other" = "$1" ] || echo "$other"; done
}

# alternatives URL BASE ALSO: URL, then the same path on every other deploy host's bootcfg.
alternatives() {
  echo "$1"
  case "$1" in
    "$2"*) for other in $(bootcfgs "$2" "$3" | sed 1d); do echo "$other${1#"$2"}"; done ;;
  esac
}

# fetch_any URL FILE BASE ALSO: fetch URL, or the same path from another deploy host.
fetch_any() {
  for candidate in $(alternatives "$1" "$3" "$4"); do
    fetch "$candidate" "$2" && return 0
    log "cannot fetch $candidate; trying the next deploy host"
  done
  return 1
}

# post_json URL FILE [HEADER...]: HTTP POST of the JSON body in FILE, with extra headers.
post_json() {
  url=$1; file=$2; shift 2
  n=$#
  while [ "$n" -gt 0 ]; do h=$1; shift; set -- "$@" --header "$h"; n=$((n - 1)); done
  wget -q -O /dev/null --header 'Content-Type: application/json' "$@" --post-file "$file" "$url"
}

# post URL [FILE]: HTTP POST (a JSON body from FILE, or an empty body).
post() {
  if [ -n "$2" ]; then
    wget -q -O /dev/null --header 'Content-Type: application/json' --post-file "$2" "$1"
  else
    wget -q -O /dev/null --post-data '' "$1"
  fi
}

# is_ignition FILE: a JSON document with ignition.version (what every Ignition config has).
is_ignition() {
  jq -e '.ignition.version | strings' "$1" >/dev/null 2>&1
}
