#!/bin/sh
# p2plab guest init (PID 1). The host's root is the guest's root, read-only over 9p, so the guest
# runs the host's own binaries; everything writable is tmpfs. p2plab fills in the @...@ fields
# (Sources/Machine/GuestInit.swift) and writes the result into the run directory.
#
# Each program started here is loaded over 9p under TCG, at a few hundred ms apiece, so init uses
# shell builtins where it can and starts as few programs as it can: p2plab-guest-setup (or mount
# and rdma), the command.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root TERM=@TERM@ P2PLAB_GUEST=1 P2PLAB_RESULTS=/run/p2plab/results
@ENVIRONMENT@
say() { echo "p2plab-init: $*"; }

# Everything in the fstab p2plab wrote beside this script (from vm/fstab): proc, sys, dev, debugfs,
# tmpfs on the directories that must be writable, and the results share; then soft-RoCE on eth0,
# which got 10.0.2.15 (QEMU's user network) and came up from the kernel's ip= argument. A failure
# is left for the checks to report. p2plab-guest-setup does both with system calls, as one static
# program (the table stays open while /tmp is mounted over, so a run directory there is no problem);
# without it, mount and rdma do the same, side by side, since both wait on loading over 9p.
if [ -x @SETUP@ ]; then
    @SETUP@ @FSTAB@@SETUP_RXE@
else
    @RXE@ &
    rxe=$!
    mount -a -T @FSTAB@
    wait "$rxe"
fi

read -r release </proc/sys/kernel/osrelease
# The host waits for this line: from here on its command timeout applies, not the boot timeout.
say "ready, kernel $release"
cd @DIRECTORY@ 2>/dev/null || cd /
P2PLAB_COMMAND=@COMMAND@
if [ -n "$P2PLAB_COMMAND" ]; then
    /bin/sh -c "$P2PLAB_COMMAND" </dev/null
    status=$?
else
    # A shell that owns the serial line, so job control and ^C work; leaving it powers off.
    stty rows @ROWS@ cols @COLUMNS@ </dev/ttyS0 2>/dev/null
    setsid -c /bin/bash -i </dev/ttyS0 >/dev/ttyS0 2>&1
    status=$?
fi
# The results share is uncached 9p: the write is on the host when echo returns, no sync needed.
echo "$status" >"$P2PLAB_RESULTS/exit-status"
say "exit status $status"
# PID 1 must not exit (that panics). Power off through ACPI; should that fail, reboot,
# which -no-reboot turns into QEMU exiting as well. (sleep may fail to load once the power-off
# has begun taking the 9p root away; that only hastens the reboot.)
echo o >/proc/sysrq-trigger
sleep 10 2>/dev/null
echo b >/proc/sysrq-trigger
