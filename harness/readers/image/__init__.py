"""Read-only readers for disk images: containers, partitions, NTFS, registry hives."""
