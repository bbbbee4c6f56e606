/* context.S: the user-thread context switch.
 *
 * Saves what the SysV ABI says a callee must preserve (rbx, rbp, r12-r15,
 * the MXCSR control bits and the x87 control word) on the old stack, stores
 * the old stack pointer, loads the new one, and restores the same set.
 * No signal mask, no syscall: that is what makes ucontext 200x slower. */
	.text
	.globl	cp_ctx_switch
	.hidden	cp_ctx_switch
	.type	cp_ctx_switch, @function
/* void cp_ctx_switch(void **save_sp, void *new_sp) */
cp_ctx_switch:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$8, %rsp
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	/* `ret`, not pop+jmp: this ret misses the return stack buffer once,
	 * but leaves it balanced, so the resumed thread's own returns (up
	 * through the scheduler's symmetric call chain) predict.  pop+jmp
	 * measured 25 ns per yield here against 8 ns with ret. */
	ret
	.cfi_endproc
	.size	cp_ctx_switch, .-cp_ctx_switch

/* First code a new context runs: cp_ctx_make left start in r13 and its
 * argument in r12.  The stack is 16-byte aligned here, as a call expects. */
	.globl	cp_ctx_trampoline
	.hidden	cp_ctx_trampoline
	.type	cp_ctx_trampoline, @function
cp_ctx_trampoline:
	.cfi_startproc
	.cfi_undefined rip	/* the outermost frame: unwinders stop here */
	xorl	%ebp, %ebp
	movq	%r12, %rdi
	callq	*%r13
	ud2			/* start must not return */
	.cfi_endproc
	.size	cp_ctx_trampoline, .-cp_ctx_trampoline

/* Where the poke handler sends a thread that must run its `redirect`
 * (signals.c): it arrives as if called from the interrupted code, whose
 * address is the return address, and must leave every register as that
 * code had it.  The general registers and flags are saved here, the
 * vector and x87 state by cp_run_redirect (xsave). */
	.globl	cp_redirect_trampoline
	.hidden	cp_redirect_trampoline
	.type	cp_redirect_trampoline, @function
cp_redirect_trampoline:
	.cfi_startproc
	pushfq
	.cfi_adjust_cfa_offset 8
	pushq	%rax
	.cfi_adjust_cfa_offset 8
	pushq	%rcx
	.cfi_adjust_cfa_offset 8
	pushq	%rdx
	.cfi_adjust_cfa_offset 8
	pushq	%rsi
	.cfi_adjust_cfa_offset 8
	pushq	%rdi
	.cfi_adjust_cfa_offset 8
	pushq	%r8
	.cfi_adjust_cfa_offset 8
	pushq	%r9
	.cfi_adjust_cfa_offset 8
	pushq	%r10
	.cfi_adjust_cfa_offset 8
	pushq	%r11
	.cfi_adjust_cfa_offset 8
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	.cfi_offset %rbp, -96
	movq	%rsp, %rbp
	.cfi_def_cfa_register %rbp
	andq	$-64, %rsp
	call	cp_run_redirect
	movq	%rbp, %rsp
	.cfi_def_cfa_register %rsp
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	popq	%r11
	.cfi_adjust_cfa_offset -8
	popq	%r10
	.cfi_adjust_cfa_offset -8
	popq	%r9
	.cfi_adjust_cfa_offset -8
	popq	%r8
	.cfi_adjust_cfa_offset -8
	popq	%rdi
	.cfi_adjust_cfa_offset -8
	popq	%rsi
	.cfi_adjust_cfa_offset -8
	popq	%rdx
	.cfi_adjust_cfa_offset -8
	popq	%rcx
	.cfi_adjust_cfa_offset -8
	popq	%rax
	.cfi_adjust_cfa_offset -8
	popfq
	.cfi_adjust_cfa_offset -8
	ret	$128	/* past the red zone it skipped (signals.c) */
	.cfi_endproc
	.size	cp_redirect_trampoline, .-cp_redirect_trampoline

	.section .note.GNU-stack,"",@progbits
	/* split-stack code calls these as its own (without the mark gold
	 * would move each caller's frame to a big chunk); they have no
	 * prologue and use a few words of the caller's stack */
	.section .note.GNU-split-stack,"",@progbits
	.section .note.GNU-no-split-stack,"",@progbits
