#!/bin/bash
# kpc node OS: the boot logic Flatcar's bootengine provides around Ignition, for a Debian
# initramfs (dracut). Installed by 'kpc lab build-os'.
#  - kpc-generator replaces the ignition-generator of Debian's ignition package: Flatcar's
#    kernel arguments (flatcar.first_boot, flatcar.oem.id) decide whether Ignition runs;
#    platform "metal" unless ignition.platform.id says otherwise.
#  - PXE boot (no root= argument): the root is the squashfs inside the initramfs under a
#    tmpfs overlay, like Flatcar's PXE image.
#  - first boot from disk: the config flatcar-install put in the OEM partition becomes
#    /usr/lib/ignition/user.ign (a link to /run/kpc/user.ign, written at boot); after Ignition succeeds the first_boot flag on the EFI
#    system partition is removed (GRUB passes flatcar.first_boot=detected while it exists).
#  - a failed Ignition stage: the emergency hook prints Ignition's error lines on the console.

check() {
    return 255
}

depends() {
    echo ignition systemd-networkd
}

install() {
    inst_multiple mount umount mkdir rm cp cat modprobe blkid sleep grep journalctl systemctl
    # replaces ignition-generator (30ignition installed it first)
    rm -f "$initdir$systemdutildir/system-generators/ignition-generator"
    inst_script "$moddir/kpc-generator" "$systemdutildir/system-generators/ignition-generator"
    inst_script "$moddir/kpc-live-root" /usr/lib/kpc/kpc-live-root
    inst_script "$moddir/kpc-oem-config" /usr/lib/kpc/kpc-oem-config
    inst_script "$moddir/kpc-first-boot-done" /usr/lib/kpc/kpc-first-boot-done
    inst_simple "$moddir/kpc-live-root.service" "$systemdsystemunitdir/kpc-live-root.service"
    inst_simple "$moddir/kpc-oem-config.service" "$systemdsystemunitdir/kpc-oem-config.service"
    inst_simple "$moddir/kpc-first-boot-done.service" \
        "$systemdsystemunitdir/kpc-first-boot-done.service"
    inst_simple "$moddir/kpc-oem-device.conf" \
        "$systemdsystemunitdir/dev-disk-by\\x2dlabel-OEM.device.d/kpc.conf"
    inst_simple "$moddir/kpc-ignition-fetch.conf" \
        "$systemdsystemunitdir/ignition-fetch.service.d/kpc-fetch-timeout.conf"
    mkdir -p "$initdir/usr/lib/ignition"
    ln -sfn /run/kpc/user.ign "$initdir/usr/lib/ignition/user.ign"
    inst_simple "$moddir/kpc-journald-console.conf" /etc/systemd/journald.conf.d/kpc-console.conf
    inst_hook cmdline 90 "$moddir/parse-kpc-live.sh"
    inst_hook emergency 50 "$moddir/kpc-ignition-failed.sh"
    hostonly='' instmods squashfs overlay loop vfat nls_cp437 nls_ascii nls_utf8 ext4 \
        virtio_blk virtio_net virtio_pci virtio_scsi virtio_rng
}
