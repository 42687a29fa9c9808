#!/bin/bash
# Stand-in for flatcar-install in kpc's tests. Usage (kpc appends the options):
#   stand_in_installer.sh RECORD_DIR MODE -d DEV -C CHANNEL -V VERSION -i IGNITION [-b URL]
# Records its options and the Ignition file in RECORD_DIR, then, by MODE:
#   ok    partition DEV (GPT: EFI-SYSTEM, ROOT) and make ext4 labelled ROOT on the 2nd
#   fail  print an error and exit 3 without writing
#   hang  touch RECORD_DIR/started and wait to be killed (for interruption tests)
#   noroot     like ok, but the filesystem is labelled OEM: no ROOT partition
#   readonly   like ok, but the ROOT filesystem cannot be mounted read-write
set -euo pipefail
record=$1 mode=$2
shift 2
printf '%s\n' "$@" >"$record/argv"
dev='' ign=''
while getopts 'd:C:V:i:b:' opt; do
  case $opt in
    d) dev=$OPTARG ;;
    i) ign=$OPTARG ;;
    *) ;;
  esac
done
cp -- "$ign" "$record/ignition.json"
echo "stand-in installer: installing to $dev"
case $mode in
  fail)
    echo "error: simulated download failure" >&2
    exit 3
    ;;
  hang)
    echo $$ >"$record/pid"
    touch "$record/started"
    exec sleep 600
    ;;
esac
case $dev in
  /dev/loop*) ;;
  *)
    echo "stand-in installer: refusing to write $dev (only loop devices)" >&2
    exit 9
    ;;
esac
printf 'label: gpt\nsize=8M, type=U, name=EFI-SYSTEM\ntype=L, name=ROOT\n' | sfdisk --quiet --wipe always "$dev"
partprobe "$dev" 2>/dev/null || blockdev --rereadpt "$dev"
part=$dev
[[ $dev =~ [0-9]$ ]] && part=${dev}p
for _ in $(seq 200); do
  [ -b "${part}2" ] && break
  sleep 0.05
done
label=ROOT
[ "$mode" = noroot ] && label=OEM
mkfs.ext4 -q -F -L "$label" "${part}2"
[ "$mode" = readonly ] && tune2fs -O read-only "${part}2" >/dev/null
echo "stand-in installer: done"
