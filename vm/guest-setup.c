/*
 * p2plab-guest-setup: what the lab guest's init does before the command runs,
 * in one statically linked program: mount every entry of an fstab, in order,
 * then add a soft-RoCE device on a network interface. It stands in for
 * `mount -a -T FSTAB` and `rdma link add NAME type rxe netdev NETDEV`: under
 * TCG each dynamically linked program takes a few hundred ms to load and
 * relocate over 9p before it does anything, and the boot waits for both.
 * p2plab compiles it with the host's cc (-static) into its cache, once per
 * version of this file (Sources/Machine/GuestSetupProgram.swift).
 *
 *   p2plab-guest-setup FSTAB [RXE_NAME NETDEV]
 *
 * fstab fields as mount(8) reads them (getmntent unescapes \040 and the like);
 * options: the mount flags below, X-mount.mkdir (create the mount point),
 * everything else goes to the filesystem as its data. Each failure is one line
 * on stderr naming the entry or the device; the others are still attempted.
 * Exit status 0 when everything worked, 1 when anything failed, 2 on bad
 * arguments or an unreadable fstab.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <mntent.h>
#include <rdma/rdma_netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
	const char *name;
	unsigned long set;
	unsigned long clear;
} flag_options[] = {
	{ "defaults", 0, 0 },   { "rw", 0, MS_RDONLY },	     { "ro", MS_RDONLY, 0 },
	{ "nosuid", MS_NOSUID, 0 }, { "suid", 0, MS_NOSUID }, { "nodev", MS_NODEV, 0 },
	{ "dev", 0, MS_NODEV },	    { "noexec", MS_NOEXEC, 0 }, { "exec", 0, MS_NOEXEC },
	{ "noatime", MS_NOATIME, 0 }, { "relatime", MS_RELATIME, 0 }, { "sync", MS_SYNCHRONOUS, 0 },
};

/* mkdir -p: every missing directory of path, as mount's X-mount.mkdir makes them. */
static int make_directories(const char *path)
{
	char buffer[4096];
	size_t length = strlen(path);
	if (length >= sizeof(buffer))
		return -1;
	memcpy(buffer, path, length + 1);
	for (char *p = buffer + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buffer, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buffer, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Mounts one entry; 0 on success. */
static int mount_entry(const struct mntent *entry)
{
	unsigned long flags = 0;
	int mkdir_first = 0;
	char data[1024] = "";
	char *options = strdup(entry->mnt_opts ? entry->mnt_opts : "");
	char *save = NULL;
	if (!options)
		return -1;
	for (char *option = strtok_r(options, ",", &save); option; option = strtok_r(NULL, ",", &save)) {
		int known = 0;
		for (size_t i = 0; i < sizeof(flag_options) / sizeof(flag_options[0]); i++) {
			if (strcmp(option, flag_options[i].name) == 0) {
				flags = (flags | flag_options[i].set) & ~flag_options[i].clear;
				known = 1;
			}
		}
		if (strcmp(option, "X-mount.mkdir") == 0) {
			mkdir_first = 1;
			known = 1;
		} else if (strncmp(option, "X-", 2) == 0 || strncmp(option, "x-", 2) == 0) {
			known = 1; /* userspace-only options, as mount(8) keeps them from the kernel */
		}
		if (!known) {
			if (strlen(data) + strlen(option) + 2 > sizeof(data)) {
				free(options);
				errno = E2BIG;
				return -1;
			}
			if (data[0])
				strcat(data, ",");
			strcat(data, option);
		}
	}
	free(options);
	if (mkdir_first && make_directories(entry->mnt_dir) != 0)
		return -1;
	return mount(entry->mnt_fsname, entry->mnt_dir, entry->mnt_type, flags, data[0] ? data : NULL);
}

/* Appends a string attribute (with its NUL, as the kernel's nla_strscpy expects). */
static void put_string(struct nlmsghdr *message, unsigned short type, const char *value)
{
	struct nlattr *attribute = (struct nlattr *)((char *)message + NLMSG_ALIGN(message->nlmsg_len));
	size_t length = strlen(value) + 1;
	attribute->nla_type = type;
	attribute->nla_len = (unsigned short)(NLA_HDRLEN + length);
	memcpy((char *)attribute + NLA_HDRLEN, value, length);
	message->nlmsg_len = NLMSG_ALIGN(message->nlmsg_len) + NLA_ALIGN(attribute->nla_len);
}

/* RDMA_NLDEV_CMD_NEWLINK, as `rdma link add NAME type rxe netdev NETDEV` sends it; 0 or an errno. */
static int add_rxe(const char *name, const char *netdev)
{
	union {
		struct nlmsghdr header;
		char bytes[512];
	} request, reply;
	memset(&request, 0, sizeof(request));
	request.header.nlmsg_len = NLMSG_HDRLEN;
	request.header.nlmsg_type = RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_NEWLINK);
	request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	request.header.nlmsg_seq = 1;
	put_string(&request.header, RDMA_NLDEV_ATTR_DEV_NAME, name);
	put_string(&request.header, RDMA_NLDEV_ATTR_LINK_TYPE, "rxe");
	put_string(&request.header, RDMA_NLDEV_ATTR_NDEV_NAME, netdev);

	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_RDMA);
	if (fd < 0)
		return errno;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (sendto(fd, &request, request.header.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
		int saved = errno;
		close(fd);
		return saved;
	}
	ssize_t got = recv(fd, &reply, sizeof(reply), 0);
	int saved = errno;
	close(fd);
	if (got < 0)
		return saved;
	if (got < (ssize_t)NLMSG_HDRLEN || reply.header.nlmsg_type != NLMSG_ERROR ||
	    got < (ssize_t)(NLMSG_HDRLEN + sizeof(struct nlmsgerr)))
		return EPROTO;
	const struct nlmsgerr *error = NLMSG_DATA(&reply.header);
	return -error->error;
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: p2plab-guest-setup FSTAB [RXE_NAME NETDEV]\n");
		return 2;
	}
	FILE *table = setmntent(argv[1], "r");
	if (!table) {
		fprintf(stderr, "p2plab-guest-setup: cannot read %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	int status = 0;
	struct mntent *entry;
	while ((entry = getmntent(table))) {
		if (mount_entry(entry) != 0) {
			fprintf(stderr, "p2plab-guest-setup: mount %s on %s (%s, %s): %s\n", entry->mnt_fsname,
				entry->mnt_dir, entry->mnt_type, entry->mnt_opts, strerror(errno));
			status = 1;
		}
	}
	endmntent(table);
	if (argc == 4) {
		int error = add_rxe(argv[2], argv[3]);
		if (error) {
			fprintf(stderr, "p2plab-guest-setup: adding %s (rxe) on %s: %s\n", argv[2], argv[3], strerror(error));
			status = 1;
		}
	}
	return status;
}
