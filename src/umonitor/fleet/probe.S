/*
 * probe.S - the accelerator probe's boot sector (see qemu.py, PROBE_SECTOR).
 *
 * It walks the path every real x86-64 guest takes, under the CPU model, machine
 * and memory size the guests get: real mode -> protected mode -> long mode (PAE
 * page tables, EFER.LME through wrmsr, paging on), then writes one byte in every
 * page of TOUCH bytes from 2 MiB up (the first touch of guest memory is what is
 * pathologically slow on some nested KVM hosts: a Linux guest there clears its
 * BSS at ~2 MB/s and never reaches its console). Then it prints "K" on COM1 and
 * writes 1 to the isa-debug-exit port 0xf4, which ends QEMU with status 3.
 *
 * TOUCH is the little-endian dword at offset 504, patched by the host. The bytes
 * are kept in qemu.py; tests/unit/test_probe.py assembles this file and checks
 * that they match:
 *   gcc -c -x assembler-with-cpp probe.S -o probe.o
 *   ld -m elf_x86_64 -Ttext 0x7c00 --oformat binary probe.o -o probe.bin
 */
    .code16
    .globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7c00, %sp
    lgdtl gdt_desc
    movl %cr0, %eax
    orb $1, %al                 /* CR0.PE */
    movl %eax, %cr0
    ljmpl $0x08, $pm32

    .code32
pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* Page tables: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000 (512 x 2 MiB). */
    movl $0x1000, %edi
    xorl %eax, %eax
    movl $0xc00, %ecx
    rep stosl
    movl $0x2003, 0x1000
    movl $0x3003, 0x2000
    movl $0x3000, %edi
    movl $0x83, %eax            /* present, writable, 2 MiB page */
1:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    cmpl $0x4000, %edi
    jne 1b
    movl %cr4, %eax
    orl $0x20, %eax             /* CR4.PAE */
    movl %eax, %cr4
    movl $0x1000, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER */
    rdmsr
    orl $0x100, %eax            /* EFER.LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax       /* CR0.PG: long mode is active */
    movl %eax, %cr0
    ljmpl $0x18, $lm64

    .code64
lm64:
    movl touch, %ecx
    movq $0x200000, %rdi
2:  movb $1, (%rdi)             /* one byte in every page */
    addq $0x1000, %rdi
    subl $0x1000, %ecx
    ja 2b
    movw $0x3f8, %dx
    movb $'K', %al
    outb %al, %dx
    movw $0xf4, %dx
    movb $1, %al
    outb %al, %dx
3:  hlt
    jmp 3b

    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt

    .org 504
touch:
    .long 0x1000
    .org 510
    .byte 0x55, 0xaa
