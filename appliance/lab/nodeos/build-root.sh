#!/bin/bash
# kpc node OS, step 1 of 2 ('kpc lab build-os' runs this as root; then it makes the images):
# a Debian root shaped like Flatcar, its kernel and its dracut initramfs (with Ignition).
#   build-root.sh ROOT SUITE MIRROR DEBCACHE NODEOS FLATCAR_INSTALL VERSION OUT
# ROOT: an empty directory to build in; NODEOS: this folder; FLATCAR_INSTALL: the installer
# with the image signing key filled in; OUT: where vmlinuz,
# initrd and the kernel release are written. Needs debootstrap and chroot; no loop devices.
set -euo pipefail
root=$1 suite=$2 mirror=$3 debcache=$4 nodeos=$5 installer=$6 version=$7 out=$8
files=$nodeos/files

PACKAGES=(
    linux-image-cloud-amd64 systemd systemd-sysv udev dbus systemd-timesyncd systemd-resolved
    dracut dracut-network ignition docker.io openssh-server sudo
    docker-cli pigz curl jq fdisk e2fsprogs gpgv bzip2 zstd iproute2 kmod procps less policycoreutils
    iputils-ping  # as Flatcar: kolla's loadbalancer precheck pings the VIP (no ping: it failed)
)
step() { printf 'build-os: %s\n' "$*"; }
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

step "debootstrap $suite from $mirror"
mkdir -p "$debcache"
debootstrap --variant=minbase --include=ca-certificates --cache-dir="$debcache" \
    "$suite" "$root" "$mirror" >"$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log" >&2; exit 1; }

# Flatcar keeps no documentation, manuals or translations in its image.
install -m 0644 "$files/dpkg-slim.cfg" "$root/etc/dpkg/dpkg.cfg.d/kpc-slim"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/90kpc"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
find "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" \
    "$root/usr/share/info" -mindepth 1 ! -name copyright ! -name locale.alias \
    ! -type d -delete 2>/dev/null || true

step "apt-get install ${PACKAGES[*]}"
mount --bind "$debcache" "$root/var/cache/apt/archives"
trap 'umount "$root/var/cache/apt/archives" 2>/dev/null || true' EXIT
# INITRD=No: the kernel package makes no initramfs of its own (ours is made below)
in_root INITRD=No apt-get install -y -q "${PACKAGES[@]}" >"$out/apt.log" 2>&1 \
    || { tail -20 "$out/apt.log" >&2; exit 1; }
umount "$root/var/cache/apt/archives"
trap - EXIT
if in_root sh -c 'ls /usr/bin/python3* >/dev/null 2>&1'; then
    echo "build-os: Python got into the node OS (Flatcar has none)" >&2
    exit 1
fi

step "kpc's files: flatcar-install, dracut module, units, configs"
install -m 0755 "$installer" "$root/usr/bin/flatcar-install"
cp -a "$nodeos/dracut/99kpc-flatcar" "$root/usr/lib/dracut/modules.d/"
install -m 0644 "$files/50-kpc-dhcp.network" "$root/etc/systemd/network/50-kpc-dhcp.network"
install -m 0644 "$files/sshd-kpc.conf" "$root/etc/ssh/sshd_config.d/50-kpc.conf"
install -m 0440 "$files/sudoers-kpc" "$root/etc/sudoers.d/kpc"
install -m 0644 "$files/kpc-sshd-keygen.service" "$root/etc/systemd/system/"
install -m 0644 "$files/dracut-kpc.conf" "$root/etc/dracut.conf.d/50-kpc.conf"
install -m 0644 "$files/50-kpc-ping.conf" "$root/usr/lib/sysctl.d/50-kpc-ping.conf"
# No SELinux here, but Debian builds Ignition to relabel what it writes (with setfiles, from
# policycoreutils): a policy configuration whose file contexts label nothing.
mkdir -p "$root/etc/selinux/kpc-none/contexts/files"
install -m 0644 "$files/selinux-config" "$root/etc/selinux/config"
printf '/.*\t<<none>>\n' >"$root/etc/selinux/kpc-none/contexts/files/file_contexts"
sed "s/@VERSION@/$version/g" "$files/os-release" >"$root/usr/lib/os-release"
ln -sfn ../usr/lib/os-release "$root/etc/os-release"

# Flatcar's "core" user (uid 500), in the groups that give sudo and Docker.
in_root useradd -u 500 -U -m -s /bin/bash -G sudo,docker -c "CoreOS Admin" core
in_root passwd -l core >/dev/null
# Docker as Flatcar has it: socket-activated (a config that wants it at boot enables
# docker.service, as kpc's targetnode config does).
in_root systemctl disable docker.service >/dev/null 2>&1
in_root systemctl enable docker.socket containerd.service ssh.service kpc-sshd-keygen.service \
    systemd-sysext.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1
in_root systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true

step "initramfs: dracut with Ignition"
kver=$(basename "$(ls -d "$root"/usr/lib/modules/*/ | head -1)")
in_root dracut --force --no-hostonly --kver "$kver" /boot/kpc-initrd.img >"$out/dracut.log" 2>&1 \
    || { tail -20 "$out/dracut.log" >&2; exit 1; }
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/kpc-initrd.img" "$out/initrd"
printf '%s\n' "$kver" >"$out/kernel-release"

step "Python as a system extension (Flatcar has no Python; kpc's Ansible path merges one)"
# What python3 adds under /usr becomes a sysext image; then python3 leaves the root again.
find "$root/usr" -xdev | sort >"$out/usr-before"
mount --bind "$debcache" "$root/var/cache/apt/archives"
trap 'umount "$root/var/cache/apt/archives" 2>/dev/null || true' EXIT
in_root apt-get install -y -q python3 python3-venv >"$out/apt-python.log" 2>&1 \
    || { tail -20 "$out/apt-python.log" >&2; exit 1; }
find "$root/usr" -xdev | sort >"$out/usr-after"
sysext=$out/python-sysext
mkdir -p "$sysext"
comm -13 "$out/usr-before" "$out/usr-after" | while IFS= read -r path; do
    if [ ! -d "$path" ] || [ -L "$path" ]; then
        rel=${path#"$root"/}
        mkdir -p "$sysext/$(dirname "$rel")"
        cp -a "$path" "$sysext/$rel"
    fi
done
mkdir -p "$sysext/usr/lib/extension-release.d"
for name in python flatcar-python; do
    printf 'ID=flatcar\nSYSEXT_LEVEL=1.0\n' >"$sysext/usr/lib/extension-release.d/extension-release.$name"
done
in_root apt-get purge -y -q --autoremove python3 python3-venv 'python3.*' 'libpython3*' \
    >>"$out/apt-python.log" 2>&1 || { tail -20 "$out/apt-python.log" >&2; exit 1; }
umount "$root/var/cache/apt/archives"
trap - EXIT
rm -rf "$root/usr/lib/python3" "$root"/usr/lib/python3.* "$root"/etc/python3*
if in_root sh -c 'ls /usr/bin/python3* >/dev/null 2>&1'; then
    echo "build-os: python3 is still in the root after removing it" >&2
    exit 1
fi

step "cleaning the root"
rm -f "$root"/boot/* "$root/usr/sbin/policy-rc.d" "$root"/etc/ssh/ssh_host_*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/var/tmp/*
# "uninitialized": every boot of the PXE image and the first boot from disk are first boots,
# so systemd applies the presets Ignition writes for the units a config enables.
printf 'uninitialized\n' >"$root/etc/machine-id"
# /usr is as new as /etc and /var: no ldconfig or catalog rebuild on the first boot
touch "$root/etc/.updated" "$root/var/.updated"
: >"$root/etc/hostname"
rm -f "$root/var/lib/dbus/machine-id"
