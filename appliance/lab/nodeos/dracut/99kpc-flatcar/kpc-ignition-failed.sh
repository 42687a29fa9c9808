#!/bin/sh
# kpc node OS: a dracut emergency hook (sourced by dracut-emergency before the emergency
# shell). When an Ignition stage failed, it prints Ignition's own errors on the console, the
# way Flatcar's bootengine prints Ignition's log there (its 99emergency-timeout hook).
# Debian's units run the mount and files stages with --log-to-stdout: their lines
# ("CRITICAL : Ignition failed: ...") reach the journal at info level, which journald's
# console forwarding (errors only) leaves out. The other stages log to syslog, by priority.
# Only Ignition's error lines are printed, not its whole log: a failed stage also dumps the
# whole config to the journal, and the config can hold a secret (bootcfg's token).

kpc_ignition_errors() {
    _kpc_failed=""
    for _kpc_stage in fetch-offline fetch kargs disks mount files; do
        if systemctl is-failed --quiet "ignition-$_kpc_stage.service"; then
            _kpc_failed="$_kpc_failed ignition-$_kpc_stage.service"
        fi
    done
    [ -n "$_kpc_failed" ] || return 0
    # syslog stages run first (fetch-offline, fetch, kargs, disks), stdout stages last
    _kpc_errors=$(
        journalctl -t ignition --no-pager -o cat -p err
        journalctl -t ignition --no-pager -o cat | grep -E '^(EMERGENCY|ALERT|CRITICAL|ERROR) *: '
    )
    echo "kpc: Ignition stopped this boot (failed:$_kpc_failed); Ignition's errors:"
    if [ -n "$_kpc_errors" ]; then
        printf '%s\n' "$_kpc_errors"
    else
        echo "(Ignition logged no error line)"
    fi
    # a boot from disk (root= given, as kpc-generator decides) read the config flatcar-install
    # wrote to the OEM partition: booting again applies the same config
    if grep -Eq '(^| )root=' "${KPC_CMDLINE:-/proc/cmdline}"; then
        echo "kpc: this config is the installed system's, written to the OEM partition by its install: booting again repeats it. Fix that config on the deploy host (ignition-validate checks its form), then install again: kpc nodes set-boot <this machine's MAC> install, and PXE-boot it"
    else
        echo "kpc: fix the config this machine was served (ignition-validate checks its form) or its config server, then boot it again"
    fi
}

kpc_ignition_errors > "${KPC_CONSOLE:-/dev/console}" 2>&1
