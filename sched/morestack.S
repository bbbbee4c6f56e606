/* morestack.S: Caprice's own __morestack and __morestack_non_split, the
 * entry points GCC's -fsplit-stack prologues call (linked.c has the C
 * side, chunk.h the layout).
 *
 * A split-stack prologue compares %rsp (less the frame, for frames of 256
 * bytes or more) with the limit at %fs:0x70 and, when the frame does not
 * fit, runs
 *         mov $FRAME, %r10 ; mov $ARGBYTES, %r11 ; call __morestack
 *         ret                 <- R: [rsp] at entry
 *         <the body>          <- R+1
 * __morestack calls R+1 on a chunk with room, with the stack arguments
 * copied there, and once the body returns it restores the limit, leaves
 * its frame and returns to R, whose `ret` returns to the function's
 * caller.  rax (a nested function's static chain, or the vector count of
 * a varargs call) and the argument registers reach the body unchanged; a
 * varargs body finds its stack arguments through %rbp, which must be
 * %rsp at entry less 8.
 *
 * The hot path, entering the chunk kept from the last call (chunk.h's
 * `newer`) and returning to the older one, runs here without a call.
 * Anything else (a new chunk, a bigger one, a big chunk for non-split
 * code, giving chunks back) runs in C on the worker's scratch stack
 * (__caprice_morestack_scratch), since the chunk being left has only its
 * slack below %rsp.
 *
 * gold and lld rewrite a prologue's call to __morestack_non_split only
 * when that is defined in the module being linked, so each module has its
 * own copy: a program links one from the static libcaprice-morestack.a
 * (as libgcc's come from libgcc.a), which calls into libthread.so under
 * reserved names; libthread-linked.so, the library's split-stack flavor,
 * holds a hidden one for its own prologues (CP_MORESTACK_INTERNAL).
 *
 * The C part runs with the limit at 0 (no prologue on the scratch stack
 * may take it for a chunk's), and sets the limit of the chunk it leaves
 * the thread on as its last act.
 *
 * The unwinder sees __morestack as called by the split function's caller
 * (CFA = entry %rsp + 16, which skips R), and its frame through %rbp, so
 * backtraces, gdb and C++ exceptions cross from a chunk to the older
 * one. */
#include "chunk.h"

#define BIG_BIT 62   /* in %r10: a big chunk, for code without prologues */

#ifdef CP_MORESTACK_INTERNAL
#define ENTRY_VISIBILITY(sym) .hidden sym
#else
#define ENTRY_VISIBILITY(sym)
#endif
/* room a call into non-split code gets, at least, on a big chunk */
#define NONSPLIT_ROOM 65536

	.text

	.globl	__morestack
	ENTRY_VISIBILITY(__morestack)
	.type	__morestack, @function
__morestack:
	.cfi_startproc
	.cfi_personality 0x9b, DW.ref.__gcc_personality_v0
	.cfi_lsda 0x1b, .Lmorestack_lsda
	.cfi_def_cfa %rsp, 16
	pushq	%rbp
	.cfi_def_cfa_offset 24
	.cfi_offset %rbp, -24
	movq	%rsp, %rbp
	.cfi_def_cfa_register %rbp
	/* 8(%rbp): R; 16(%rbp): the caller's return; 24(%rbp): stack args */
	pushq	%rax
	pushq	%rdi
	pushq	%rsi
	pushq	%rdx
	pushq	%rcx
	pushq	%r8
	pushq	%r9
	pushq	%rbx
	movq	%fs:0x70, %rax
	subq	$CP_CHUNK_LIMIT_OFF, %rax	/* the chunk we are on */
	btq	$BIG_BIT, %r10
	jc	.Lgrow
	movq	CP_CHUNK_NEWER(%rax), %rbx
	testq	%rbx, %rbx
	jz	.Lgrow
	cmpl	$CP_CHUNK_BIG, CP_CHUNK_CLS(%rbx)
	je	.Lgrow
	leaq	CP_CHUNK_LIMIT_OFF+256(%r10,%r11), %rcx
	cmpq	CP_CHUNK_SIZE(%rbx), %rcx
	ja	.Lgrow
	/* the kept chunk has room: the arguments go to its top */
	movq	CP_CHUNK_SIZE(%rbx), %rcx
	addq	%rbx, %rcx
	subq	%r11, %rcx
	andq	$-16, %rcx
	xorl	%edx, %edx
1:	cmpq	%r11, %rdx
	jae	2f
	movq	24(%rbp,%rdx), %rsi
	movq	%rsi, (%rcx,%rdx)
	addq	$8, %rdx
	jmp	1b
2:	leaq	CP_CHUNK_LIMIT_OFF(%rbx), %rdx
	movq	%rdx, %fs:0x70
	jmp	.Lcall_body

.Lgrow:
	/* C, on the scratch stack, with the vector argument registers kept:
	 * rcx = cp_morestack_grow(r10, r11, 24(%rbp), chunk) */
	movq	__caprice_morestack_scratch@gottpoff(%rip), %rbx
	movq	%fs:(%rbx), %rbx
	movq	$0, %fs:0x70
	movq	%rsp, -8(%rbx)
	leaq	-144(%rbx), %rsp
	movdqu	%xmm0, 0(%rsp)
	movdqu	%xmm1, 16(%rsp)
	movdqu	%xmm2, 32(%rsp)
	movdqu	%xmm3, 48(%rsp)
	movdqu	%xmm4, 64(%rsp)
	movdqu	%xmm5, 80(%rsp)
	movdqu	%xmm6, 96(%rsp)
	movdqu	%xmm7, 112(%rsp)
	movq	%r10, %rdi
	movq	%r11, %rsi
	leaq	24(%rbp), %rdx
	movq	%rax, %rcx
	call	__caprice_morestack_grow@PLT
	movq	%rax, %rcx
	movdqu	0(%rsp), %xmm0
	movdqu	16(%rsp), %xmm1
	movdqu	32(%rsp), %xmm2
	movdqu	48(%rsp), %xmm3
	movdqu	64(%rsp), %xmm4
	movdqu	80(%rsp), %xmm5
	movdqu	96(%rsp), %xmm6
	movdqu	112(%rsp), %xmm7
	movq	136(%rsp), %rsp

.Lcall_body:
	/* rcx: the body's %rsp, its stack arguments there */
	movq	8(%rbp), %r10
	incq	%r10
	movq	%rcx, %r11
	movq	-8(%rbp), %rax
	movq	-16(%rbp), %rdi
	movq	-24(%rbp), %rsi
	movq	-32(%rbp), %rdx
	movq	-40(%rbp), %rcx
	movq	-48(%rbp), %r8
	movq	-56(%rbp), %r9
	movq	-64(%rbp), %rbx
	movq	%r11, %rsp
.Lbody_call:
	call	*%r10
.Lbody_return:
	/* the body returned: rax, rdx, xmm0, xmm1 hold its result */
	movq	%fs:0x70, %r10
	subq	$CP_CHUNK_LIMIT_OFF, %r10	/* the chunk we leave */
	cmpl	$CP_CHUNK_BIG, CP_CHUNK_CLS(%r10)
	je	.Lrelease
	cmpq	$0, CP_CHUNK_NEWER(%r10)
	jne	.Lrelease
	/* kept for the next call: the hot split costs no allocation */
	movq	CP_CHUNK_OLDER(%r10), %r10
	addq	$CP_CHUNK_LIMIT_OFF, %r10
	movq	%r10, %fs:0x70
.Lleave:
	movq	%rbp, %rsp
	popq	%rbp
	.cfi_remember_state
	.cfi_def_cfa %rsp, 16
	ret
	.cfi_restore_state

.Lrelease:
	/* C gives back what is not kept and restores the limit */
	movq	__caprice_morestack_scratch@gottpoff(%rip), %r11
	movq	%fs:(%r11), %rsp
	movq	$0, %fs:0x70
	subq	$48, %rsp
	movq	%rax, 0(%rsp)
	movq	%rdx, 8(%rsp)
	movdqu	%xmm0, 16(%rsp)
	movdqu	%xmm1, 32(%rsp)
	movq	%r10, %rdi
	call	__caprice_morestack_release@PLT
	movq	0(%rsp), %rax
	movq	8(%rsp), %rdx
	movdqu	16(%rsp), %xmm0
	movdqu	32(%rsp), %xmm1
	jmp	.Lleave

.Lunwound:
	/* an exception leaves the body (a C++ throw, a forced unwind): like
	 * a return, the chunk goes back or is kept and the limit is the older
	 * chunk's again; then the unwinding goes on from the old stack */
	movq	%rax, -8(%rbp)			/* the exception */
	movq	%fs:0x70, %rdi
	subq	$CP_CHUNK_LIMIT_OFF, %rdi
	movq	__caprice_morestack_scratch@gottpoff(%rip), %r11
	movq	%fs:(%r11), %rsp
	movq	$0, %fs:0x70
	call	__caprice_morestack_release@PLT
	leaq	-72(%rbp), %rsp
	movq	-8(%rbp), %rdi
	call	_Unwind_Resume@PLT
	ud2
	.cfi_endproc
	.size	__morestack, .-__morestack

	/* the body's call is a cleanup region (C's own LSDA format, which
	 * __gcc_personality_v0 reads) */
	.section .gcc_except_table,"a",@progbits
.Lmorestack_lsda:
	.byte	0xff				/* no @LPStart */
	.byte	0xff				/* no @TType */
	.byte	0x01				/* call sites: uleb128 */
	.uleb128 .Lcs_end - .Lcs_start
.Lcs_start:
	.uleb128 .Lbody_call - __morestack
	.uleb128 .Lbody_return - .Lbody_call
	.uleb128 .Lunwound - __morestack
	.uleb128 0				/* a cleanup */
.Lcs_end:

	.hidden	DW.ref.__gcc_personality_v0
	.weak	DW.ref.__gcc_personality_v0
	.section .data.rel.local.DW.ref.__gcc_personality_v0,"awG",@progbits,DW.ref.__gcc_personality_v0,comdat
	.align	8
	.type	DW.ref.__gcc_personality_v0, @object
	.size	DW.ref.__gcc_personality_v0, 8
DW.ref.__gcc_personality_v0:
	.quad	__gcc_personality_v0

	.text

/* gold and lld send the prologue of a split function that calls code
 * without prologues (the C library, any unmodified library) here instead.
 * On no chunk (limit 0: main, a thread on a contiguous stack) or on a big
 * chunk with room, the body runs where it is; otherwise on a big chunk. */
	.globl	__morestack_non_split
	ENTRY_VISIBILITY(__morestack_non_split)
	.type	__morestack_non_split, @function
__morestack_non_split:
	.cfi_startproc
	.cfi_def_cfa %rsp, 16
	pushq	%rax
	.cfi_def_cfa_offset 24
	movq	%fs:0x70, %rax
	testq	%rax, %rax
	jz	.Lns_here
	subq	$CP_CHUNK_LIMIT_OFF, %rax
	cmpl	$CP_CHUNK_BIG, CP_CHUNK_CLS(%rax)
	jne	.Lns_switch
	movq	%rsp, %rax
	subq	%r10, %rax
	jb	.Lns_switch
	subq	$NONSPLIT_ROOM, %rax
	jb	.Lns_switch
	cmpq	%fs:0x70, %rax
	jb	.Lns_switch
.Lns_here:
	/* a varargs body takes its stack arguments through %rbp */
	movq	8(%rsp), %rax
	cmpl	$0x185d8d4c, 1(%rax)		/* lea 0x18(%rbp),%r11 */
	je	.Lns_varargs
	popq	%rax
	.cfi_def_cfa_offset 16
	incq	(%rsp)
	ret
.Lns_varargs:
	.cfi_def_cfa_offset 24
	popq	%rax
	.cfi_def_cfa_offset 16
	pushq	%rbp
	.cfi_def_cfa_offset 24
	.cfi_offset %rbp, -24
	movq	%rsp, %rbp
	.cfi_def_cfa_register %rbp
	subq	$8, %rsp
	movq	8(%rbp), %r11
	incq	%r11
	call	*%r11
	movq	%rbp, %rsp
	popq	%rbp
	.cfi_def_cfa %rsp, 16
	ret
.Lns_switch:
	.cfi_def_cfa %rsp, 24
	.cfi_restore %rbp
	popq	%rax
	.cfi_def_cfa_offset 16
	btsq	$BIG_BIT, %r10
	jmp	__morestack
	.cfi_endproc
	.size	__morestack_non_split, .-__morestack_non_split

/* void *__morestack_allocate_stack_space(size_t): the C part may call
 * malloc, which needs more than a chunk's slack */
	.globl	__morestack_allocate_stack_space
	ENTRY_VISIBILITY(__morestack_allocate_stack_space)
	.type	__morestack_allocate_stack_space, @function
__morestack_allocate_stack_space:
	.cfi_startproc
	pushq	%rbx
	.cfi_def_cfa_offset 16
	.cfi_offset %rbx, -16
	movq	%rsp, %rbx
	.cfi_def_cfa_register %rbx
	movq	__caprice_morestack_scratch@gottpoff(%rip), %rax
	movq	%fs:(%rax), %rsp
	pushq	%fs:0x70
	subq	$8, %rsp
	movq	$0, %fs:0x70
	call	__caprice_morestack_alloca@PLT
	movq	8(%rsp), %rcx
	movq	%rcx, %fs:0x70
	movq	%rbx, %rsp
	.cfi_def_cfa_register %rsp
	popq	%rbx
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
	.size	__morestack_allocate_stack_space, .-__morestack_allocate_stack_space

	.section .note.GNU-stack,"",@progbits
	/* these entry points are split-stack code as far as gold and lld can
	 * tell (without the mark a call to __morestack itself would count as
	 * a call into code without prologues), whose functions have no
	 * prologue to rewrite (the second mark) */
	.section .note.GNU-split-stack,"",@progbits
	.section .note.GNU-no-split-stack,"",@progbits
