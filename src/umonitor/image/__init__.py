"""Guest boot images: a Linux kernel with our initramfs, and Nanos disks for the fleet."""
