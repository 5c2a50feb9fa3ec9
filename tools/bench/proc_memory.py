"""The process's resident memory from Linux /proc, as the Pigment side reads it
(crates/pigment/src/bench/measure.rs): VmRSS / VmHWM in bytes, and VmHWM reset to the current
RSS so that the next reading is the peak of what ran in between."""


def status_bytes(field):
    """A /proc/self/status field in kB ("VmHWM:  123 kB") as bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Sets VmHWM back to the current RSS (Linux 4.0+); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
