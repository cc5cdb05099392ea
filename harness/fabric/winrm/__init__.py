"""WS-Management (WinRM) server and the emulated guest it runs commands in."""
