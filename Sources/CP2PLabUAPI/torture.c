/*
 * The torture's provider loop writes unbind from a child process: an unbind
 * that never returns (a leaked page reference keeps memunmap_pages() waiting
 * forever, in D state) must not keep the torture itself from reporting and
 * exiting. Only system calls between fork() and _exit() (the parent is
 * multi-threaded).
 */
#define _GNU_SOURCE
#include "CP2PLabUAPI.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int p2plab_sysfs_write_in_child(const char *path, const char *text, size_t length, int *pid_out)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		ssize_t n;

		if (fd < 0)
			_exit(errno & 0xff);
		n = write(fd, text, length);
		_exit(n < 0 ? (errno & 0xff) : 0);
	}
	*pid_out = pid;
	return 0;
}

int p2plab_poll_child(int pid, int *status)
{
	pid_t done;

	do {
		done = waitpid(pid, status, WNOHANG);
	} while (done < 0 && errno == EINTR);
	if (done < 0)
		return -errno;
	return done == pid ? 1 : 0;
}
