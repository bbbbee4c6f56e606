/* fence.c: the rare side of the asymmetric barrier (fence.h). */
#include "fence.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

bool cp_membarrier_ready CP_HIDDEN;

void cp_membarrier_init(void)
{
	cp_membarrier_ready =
		syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

void cp_fence_rare(void)
{
	if (cp_membarrier_ready)
		syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	else
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
