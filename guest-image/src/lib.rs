//! Builds the kernel, initramfs and data disk of Berth's Linux VM from
//! distribution packages. Lands with the VM backend issue.
