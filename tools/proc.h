/*
 * Facts about processes for the tools and tests: the page size, this
 * process's resident memory, a child's wait status in words, and the cleanup
 * of what a killed process leaves in /dev/shm. Shared by fabnet-ft and the
 * programs that fork or kill peers.
 */
#ifndef FABNET_TOOLS_PROC_H
#define FABNET_TOOLS_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* sysconf(_SC_PAGESIZE), or 4096 when it fails. */
size_t page_size(void);
/* This process's resident set in bytes (/proc/self/statm), 0 if unknown. */
size_t rss_bytes(void);
/* A waitpid() status as words: "exited with status N", "was killed by
 * signal N (name)" (SIGALRM: the watchdog fired), ... */
void describe_status(int st, char *buf, size_t len);
/* A process killed with SIGKILL leaves its libfabric shm region behind
 * (/dev/shm/PID:N:M); a later process that gets the same pid then cannot open
 * shm ("shm file in use"). Removes what the dead process pid left. */
void shm_leftovers_remove(pid_t pid);

#endif
