/* pthread_wrap.S: GCC's driver links a program built with -fsplit-stack
 * with --wrap=pthread_create, for libgcc's own split-stack runtime, which
 * would then come in beside morestack.S and clash with it.  A program
 * that links libcaprice-morestack.a gets this instead: pthread_create
 * itself (libthread sets up each thread's stack), in a member of its own,
 * taken only when the driver asked for the wrap. */
	.text
	.globl	__wrap_pthread_create
	.type	__wrap_pthread_create, @function
__wrap_pthread_create:
	.cfi_startproc
	jmp	__real_pthread_create@PLT
	.cfi_endproc
	.size	__wrap_pthread_create, .-__wrap_pthread_create

	.section .note.GNU-stack,"",@progbits
	/* split-stack code as gold sees it (callers keep their chunk), with no
	 * prologue to rewrite */
	.section .note.GNU-split-stack,"",@progbits
	.section .note.GNU-no-split-stack,"",@progbits
