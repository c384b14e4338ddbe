/* Facts about processes for the tools and tests: see proc.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

size_t page_size(void)
{
	long ps = sysconf(_SC_PAGESIZE);

	return ps > 0 ? (size_t)ps : 4096;
}

void describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(st),
			 strsignal(WTERMSIG(st)),
			 WTERMSIG(st) == SIGALRM ? ": its watchdog fired, a plugin call hung" : "");
	else
		snprintf(buf, len, "ended with status 0x%x", st);
}

void shm_leftovers_remove(pid_t pid)
{
	char prefix[32], path[300];
	struct dirent *d;
	DIR *dir;
	size_t n;

	if (pid <= 0 || !(dir = opendir("/dev/shm")))
		return;
	n = (size_t)snprintf(prefix, sizeof(prefix), "%d:", (int)pid);
	while ((d = readdir(dir)) != NULL)
		if (!strncmp(d->d_name, prefix, n)) {
			snprintf(path, sizeof(path), "/dev/shm/%s", d->d_name);
			unlink(path);
		}
	closedir(dir);
}

size_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return res * page_size();
}
