"""Service Management REST API emulator (classic ASM), as azure-servicemanagement-legacy speaks it."""
