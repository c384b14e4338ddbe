/* softefa: the shared segment of a device instance. Initiators of RDMA map
 * the target's segment to check keys, bounds, access, QPs and AHs the way the
 * target NIC would, under the target's robust process-shared mutex. */
#include "sefa.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sefa_shm_create(const char *path, struct sefa_shm **out)
{
	pthread_mutexattr_t ma;
	struct sefa_shm *shm;
	int fd, err;

	unlink(path);	/* a stale segment of a dead process with our name */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = errno;
		SEFA_ERR("cannot create the device segment %s: %s", path, strerror(err));
		return err;
	}
	if (ftruncate(fd, sizeof(*shm))) {
		err = errno;
		SEFA_ERR("cannot size the device segment %s: %s", path, strerror(err));
		close(fd);
		unlink(path);
		return err;
	}
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	err = errno;
	close(fd);
	if (shm == MAP_FAILED) {
		SEFA_ERR("cannot map the device segment %s: %s", path, strerror(err));
		unlink(path);
		return err;
	}
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&shm->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	shm->pid = getpid();
	shm->incarnation = sefa_now_ns() ^ ((uint64_t)getpid() << 32);
	atomic_store(&shm->alive, 1);
	__atomic_store_n(&shm->magic, SEFA_SHM_MAGIC, __ATOMIC_RELEASE);
	*out = shm;
	return 0;
}

int sefa_shm_map_peer(const char *path, struct sefa_shm **out)
{
	struct sefa_shm *shm;
	struct stat st;
	int fd, err;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno;
	if (fstat(fd, &st) || (size_t)st.st_size < sizeof(*shm)) {
		close(fd);
		return EAGAIN;	/* being created */
	}
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	err = errno;
	close(fd);
	if (shm == MAP_FAILED)
		return err;
	if (__atomic_load_n(&shm->magic, __ATOMIC_ACQUIRE) != SEFA_SHM_MAGIC) {
		munmap(shm, sizeof(*shm));
		return EAGAIN;
	}
	*out = shm;
	return 0;
}

void sefa_shm_unmap(struct sefa_shm *shm)
{
	if (shm)
		munmap(shm, sizeof(*shm));
}

int sefa_shm_lock(struct sefa_shm *shm)
{
	int err = pthread_mutex_lock(&shm->lock);

	if (err == EOWNERDEAD) {
		/* the holder died mid-check; the tables are only written under the
		 * lock by their owner, a dead initiator cannot have torn them */
		pthread_mutex_consistent(&shm->lock);
		err = 0;
	}
	return err;
}

void sefa_shm_unlock(struct sefa_shm *shm)
{
	pthread_mutex_unlock(&shm->lock);
}

/* A zombie counts as dead: its sockets are closed, it will never answer. */
bool sefa_pid_alive(int pid)
{
	char path[64], buf[256], *p;
	ssize_t n;
	int fd;

	if (pid <= 0 || (kill(pid, 0) && errno != EPERM))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;	/* no /proc: trust kill() */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	p = strrchr(buf, ')');	/* "pid (comm) S ..." */
	return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}
