#!/bin/sh
# No root= on the command line: a PXE boot, the root comes from the initramfs (kpc-live-root).
if [ -z "$root" ] && [ -z "$(getarg root=)" ]; then
    root=kpc-live
    rootok=1
fi
