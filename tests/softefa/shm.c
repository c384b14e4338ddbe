/* softefa: the shared segment of a device instance. Initiators of RDMA map
 * the target's segment to check keys, bounds, access, QPs and AHs the way the
 * target NIC would, under the target's robust process-shared mutex. */
#include "sefa.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
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
	shm->pid = getpid();	/* for people reading a dump: pids mean nothing across namespaces */
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

/* Someone is bound to this socket address: a live device instance. A dead
 * process (a zombie too) has closed its socket, and connect() is refused;
 * this works across PID namespaces, where pids do not. */
bool sefa_sock_has_owner(const struct sockaddr_un *a)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool owned = fd >= 0 && connect(fd, (const struct sockaddr *)a, sizeof(*a)) == 0;

	if (fd >= 0)
		close(fd);
	return owned;
}
