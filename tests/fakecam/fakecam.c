/*
 * fakecam: a fake UVC webcam in user space, for tests.
 *
 * Preloaded into a process (LD_PRELOAD), this library makes a device path such as /dev/video42
 * look like a USB MJPEG webcam to code that talks V4L2 through the C library, GStreamer's real
 * v4l2src among them. These machines cannot load kernel modules (no v4l2loopback, no vivid) and
 * have no CUSE, so the "driver" lives here: it answers the V4L2 ioctls the way uvcvideo does and
 * paces JPEG frames, generated with libjpeg, at the mode's rate.
 *
 * How the pieces fit:
 * - open()/openat() of the device path returns one end of a socketpair. It is a real file
 *   descriptor, so poll/ppoll/select work untouched: it is readable exactly while a filled buffer
 *   waits for VIDIOC_DQBUF (we send one byte per filled buffer from the other end and take one
 *   back at each DQBUF). An eventfd would do the same, but only a socket can also report what an
 *   unplugged V4L2 node reports, POLLERR|POLLHUP (v4l2_poll in the kernel): when the camera is
 *   unplugged we close our end with unread data in it, which gives the application's end
 *   ECONNRESET, so every poller wakes up with POLLERR, as v4l2src does on a real unplug.
 *   dup() of it shares the open file, as it would with a real driver.
 * - stat()/lstat()/access() and friends make the path look like a character device (and
 *   FAKECAM_LINKS like symlinks to it, e.g. a /dev/v4l/by-id/... name).
 * - Buffers live in one memfd; mmap() of the fake fd at a buffer's offset maps that memfd, so the
 *   application gets a real shared mapping of the memory the frame thread writes into.
 * - A thread per streaming camera waits for each frame's time (CLOCK_MONOTONIC, absolute, so the
 *   rate does not drift), takes the oldest queued buffer, draws and encodes the frame into it and
 *   marks it done. With no queued buffer the frame is dropped, as a driver drops it.
 * - read() of the fake fd fails EINVAL (no read() I/O, as uvcvideo); any ioctl it does not know
 *   fails ENOTTY, controls it does not have fail EINVAL.
 *
 * Configuration is read once at load (all optional but FAKECAM_DEVICE; without it the library
 * does nothing):
 *   FAKECAM_DEVICE       the device node, e.g. /dev/video42
 *   FAKECAM_MODES        comma-separated FORMAT:WxH@RATE[/RATE...], FORMAT mjpeg or yuyv
 *                        (default mjpeg:640x480@30/15,mjpeg:1280x720@30/15,mjpeg:320x240@30)
 *   FAKECAM_LINKS        comma-separated paths that are symlinks to the node (by-id names)
 *   FAKECAM_FAULTS       comma-separated faults, see add_fault()
 *   FAKECAM_UNPLUG_FILE  a file that carries the unplugged state between processes (see plug_state)
 *   FAKECAM_DEBUG        1: log opens, ioctls and faults to stderr
 *   FAKECAM_STAMP        1: draw the capture-time stamp of streamer/media/stamp.py at the top of
 *                        each frame (for latency measurements; see stamp_bits)
 *
 * Faults count frames per stream, from 1 (the sequence number plus one), so "every 30th frame" is
 * frames 30, 60, ...; every frame carries its number in a JPEG COM marker ("fakecam frame=N" plus
 * " fault=..." when one was applied) and in its pixels (a strip of 24 black/white blocks, most
 * significant bit first, and seven-segment digits for people looking at a snapshot).
 *
 * Never combine with GST_V4L2_USE_LIBV4L2=1: libv4l2 makes raw system calls that bypass any preload.
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/version.h>
#include <linux/videodev2.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jpeglib.h>

#define MAX_MODES 32
#define MAX_RATES 8
#define MAX_LINKS 8
#define MAX_DIRS 16
#define MAX_DEAD 8
#define MAX_BUFFERS 32 /* uvcvideo's UVC_MAX_VIDEO_BUFFERS */
#define MAX_FDS 65536
#define MAX_MAPS 256
#define STRIP_BITS 24 /* frame number bits drawn in the strip at the top of each frame */
#define CARD "Fakecam Webcam"

/* ------------------------------------------------------------------------------------------ */
/* The real C library functions, looked up lazily: our wrappers can be called before our      */
/* constructor runs (from other libraries' constructors).                                      */

static void *resolve(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (!p) {
		p = dlsym(RTLD_NEXT, name);
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}
#define REAL(name) ((__typeof__(real_##name))resolve((void **)&real_##name, #name))

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real___open_2)(const char *, int);
static int (*real___open64_2)(const char *, int);
static int (*real___openat_2)(int, const char *, int);
static int (*real___openat64_2)(int, const char *, int);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static ssize_t (*real_read)(int, void *, size_t);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off64_t);
static int (*real_munmap)(void *, size_t);
static int (*real_stat)(const char *, struct stat *);
static int (*real_stat64)(const char *, struct stat64 *);
static int (*real_lstat)(const char *, struct stat *);
static int (*real_lstat64)(const char *, struct stat64 *);
static int (*real_fstat)(int, struct stat *);
static int (*real_fstat64)(int, struct stat64 *);
static int (*real_fstatat)(int, const char *, struct stat *, int);
static int (*real_fstatat64)(int, const char *, struct stat64 *, int);
static int (*real___xstat)(int, const char *, struct stat *);
static int (*real___xstat64)(int, const char *, struct stat64 *);
static int (*real___lxstat)(int, const char *, struct stat *);
static int (*real___lxstat64)(int, const char *, struct stat64 *);
static int (*real___fxstat)(int, int, struct stat *);
static int (*real___fxstat64)(int, int, struct stat64 *);
static int (*real___fxstatat)(int, int, const char *, struct stat *, int);
static int (*real___fxstatat64)(int, int, const char *, struct stat64 *, int);
static int (*real_statx)(int, const char *, int, unsigned int, struct statx *);
static int (*real_access)(const char *, int);
static int (*real_faccessat)(int, const char *, int, int);
static int (*real_euidaccess)(const char *, int);
static ssize_t (*real_readlink)(const char *, char *, size_t);
static ssize_t (*real_readlinkat)(int, const char *, char *, size_t);

/* ------------------------------------------------------------------------------------------ */
/* Configuration                                                                               */

struct mode {
	uint32_t fourcc; /* V4L2_PIX_FMT_MJPEG or V4L2_PIX_FMT_YUYV */
	uint32_t width, height;
	int nrates;
	uint32_t rates[MAX_RATES]; /* frames per second, in the order listed */
};

struct dead { /* a mode that is listed but never delivers: fourcc/rate 0 match any */
	uint32_t fourcc, width, height, rate;
};

static struct {
	int active;
	int debug;
	char device[PATH_MAX];
	int nlinks;
	char links[MAX_LINKS][PATH_MAX];
	int ndirs; /* directories of the links that do not really exist: shown as directories */
	char dirs[MAX_DIRS][PATH_MAX];
	int nmodes;
	struct mode modes[MAX_MODES];
	char unplug_file[PATH_MAX];
	/* faults */
	unsigned truncate_every, corrupt_every;
	unsigned slow_rate, slow_after;
	long unplug_after; /* -1: never */
	double replug_after_s; /* <0: never (only by removing the unplug file) */
	char replug_node[PATH_MAX]; /* empty: the same node */
	long stall_after; /* -1: never */
	int error_flag;   /* frames broken by a fault carry V4L2_BUF_FLAG_ERROR */
	int stamp;        /* FAKECAM_STAMP=1: the capture-time stamp drawn into each frame */
	int ndead;
	struct dead dead[MAX_DEAD];
} cfg = {.unplug_after = -1, .replug_after_s = -1, .stall_after = -1};

#define LOG(...)                                                                                   \
	do {                                                                                       \
		if (cfg.debug)                                                                     \
			fprintf(stderr, "fakecam: " __VA_ARGS__);                                  \
	} while (0)

static void die(const char *what, const char *value)
{
	/* A test that configures the camera wrongly must fail loudly, at once. */
	fprintf(stderr, "fakecam: %s: '%s'\n", what, value);
	_exit(2);
}

static uint32_t parse_fourcc(const char *name, size_t len)
{
	if (len == 5 && !strncmp(name, "mjpeg", 5))
		return V4L2_PIX_FMT_MJPEG;
	if (len == 4 && !strncmp(name, "yuyv", 4))
		return V4L2_PIX_FMT_YUYV;
	return 0;
}

/* "mjpeg:1280x720@30/15" (the format may be left out in a dead= fault: any format) */
static int parse_mode(const char *text, struct mode *m, int need_format, int need_rate)
{
	const char *colon = strchr(text, ':');
	char *end;
	memset(m, 0, sizeof *m);
	if (colon) {
		if (!(m->fourcc = parse_fourcc(text, colon - text)))
			return -1;
		text = colon + 1;
	} else if (need_format) {
		return -1;
	}
	m->width = strtoul(text, &end, 10);
	if (*end != 'x' || m->width < 16 || m->width > 7680 || m->width % 2)
		return -1;
	m->height = strtoul(end + 1, &end, 10);
	if (m->height < 16 || m->height > 4320 || m->height % 2)
		return -1;
	if (*end == '\0')
		return need_rate ? -1 : 0;
	if (*end != '@')
		return -1;
	do {
		unsigned long rate = strtoul(end + 1, &end, 10);
		if (rate < 1 || rate > 240 || m->nrates == MAX_RATES)
			return -1;
		m->rates[m->nrates++] = rate;
	} while (*end == '/');
	return *end == '\0' ? 0 : -1;
}

/* Splits a comma-separated list in place and calls fn on each item. */
static void for_each_item(char *list, void (*fn)(char *))
{
	char *save = NULL;
	for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save))
		fn(item);
}

static void add_mode(char *item)
{
	if (cfg.nmodes == MAX_MODES || parse_mode(item, &cfg.modes[cfg.nmodes], 1, 1))
		die("FAKECAM_MODES: not FORMAT:WIDTHxHEIGHT@RATE[/RATE...] (mjpeg or yuyv)", item);
	cfg.nmodes++;
}

static void add_dir(const char *dir)
{
	struct stat st;
	for (int i = 0; i < cfg.ndirs; i++)
		if (!strcmp(cfg.dirs[i], dir))
			return;
	if (REAL(stat)(dir, &st) == 0 || cfg.ndirs == MAX_DIRS)
		return; /* a real directory (like /dev) stays real */
	snprintf(cfg.dirs[cfg.ndirs++], PATH_MAX, "%s", dir);
}

static void add_link(char *item)
{
	char dir[PATH_MAX];
	if (item[0] != '/' || cfg.nlinks == MAX_LINKS)
		die("FAKECAM_LINKS: not an absolute path (or more than 8)", item);
	snprintf(cfg.links[cfg.nlinks++], PATH_MAX, "%s", item);
	/* /dev/v4l/by-id/x needs /dev/v4l and /dev/v4l/by-id to look like directories, so that a
	 * path resolver walking it component by component (Python's os.path.realpath) gets through. */
	snprintf(dir, sizeof dir, "%s", item);
	for (char *slash = strrchr(dir, '/'); slash && slash != dir; slash = strrchr(dir, '/')) {
		*slash = '\0';
		add_dir(dir);
	}
}

/*
 * Faults (FAKECAM_FAULTS), comma-separated:
 *   truncate=N        every Nth frame is cut in half: no end-of-image marker
 *   corrupt=N         every Nth frame loses a quarter of its entropy-coded data from the middle
 *                     (as lost USB packets do); its end-of-image marker stays
 *   slow=R[@K]        after frame K (default 0) frames come at R per second whatever the mode says
 *   stall=K           after frame K no more frames come (no error): a camera that freezes
 *   unplug=K          after frame K the camera is unplugged: DQBUF and other ioctls fail ENODEV,
 *                     poll wakes up, and the node disappears (open/stat fail ENOENT)
 *   replug=S[@NODE]   S seconds after the unplug the camera is back (at NODE if given: a new
 *                     node number), for new opens; open fds of before stay dead
 *   dead=[FMT:]WxH[@R] that mode is listed but never delivers a frame (repeatable)
 *   errorflag=1       frames broken by truncate/corrupt are dequeued with V4L2_BUF_FLAG_ERROR, as
 *                     uvcvideo marks a frame whose payload header had the error bit (by default a
 *                     broken frame comes unflagged, as from most cameras)
 */
static void add_fault(char *item)
{
	char *eq = strchr(item, '='), *value, *end;
	if (!eq)
		die("FAKECAM_FAULTS: not NAME=VALUE", item);
	*eq = '\0';
	value = eq + 1;
	if (!strcmp(item, "truncate") || !strcmp(item, "corrupt")) {
		unsigned long n = strtoul(value, &end, 10);
		if (*end || n < 1)
			die("FAKECAM_FAULTS: truncate/corrupt need a frame count >= 1", value);
		*(item[0] == 't' ? &cfg.truncate_every : &cfg.corrupt_every) = n;
	} else if (!strcmp(item, "slow")) {
		cfg.slow_rate = strtoul(value, &end, 10);
		if (*end == '@')
			cfg.slow_after = strtoul(end + 1, &end, 10);
		if (*end || cfg.slow_rate < 1)
			die("FAKECAM_FAULTS: slow=RATE[@FRAME]", value);
	} else if (!strcmp(item, "stall") || !strcmp(item, "unplug")) {
		long k = strtol(value, &end, 10);
		if (*end || k < 0)
			die("FAKECAM_FAULTS: stall/unplug need a frame count >= 0", value);
		*(item[0] == 's' ? &cfg.stall_after : &cfg.unplug_after) = k;
	} else if (!strcmp(item, "replug")) {
		cfg.replug_after_s = strtod(value, &end);
		if (*end == '@' && end[1] == '/')
			snprintf(cfg.replug_node, PATH_MAX, "%s", end + 1);
		else if (*end)
			die("FAKECAM_FAULTS: replug=SECONDS[@/dev/NODE]", value);
		if (cfg.replug_after_s < 0)
			die("FAKECAM_FAULTS: replug=SECONDS[@/dev/NODE]", value);
	} else if (!strcmp(item, "errorflag")) {
		cfg.error_flag = strtol(value, &end, 10);
		if (*end || (cfg.error_flag != 0 && cfg.error_flag != 1))
			die("FAKECAM_FAULTS: errorflag=0|1", value);
	} else if (!strcmp(item, "dead")) {
		struct mode m;
		if (cfg.ndead == MAX_DEAD || parse_mode(value, &m, 0, 0) || m.nrates > 1)
			die("FAKECAM_FAULTS: dead=[FORMAT:]WIDTHxHEIGHT[@RATE]", value);
		cfg.dead[cfg.ndead++] = (struct dead){m.fourcc, m.width, m.height, m.nrates ? m.rates[0] : 0};
	} else {
		die("FAKECAM_FAULTS: unknown fault (truncate corrupt slow stall unplug replug dead errorflag)", item);
	}
}

static char *env_copy(const char *name, const char *fallback)
{
	const char *value = getenv(name);
	return strdup(value && *value ? value : fallback);
}

__attribute__((constructor)) static void fakecam_init(void)
{
	const char *device = getenv("FAKECAM_DEVICE"), *debug = getenv("FAKECAM_DEBUG");
	char *list;
	if (!device || !*device)
		return;
	if (device[0] != '/' || strlen(device) >= PATH_MAX)
		die("FAKECAM_DEVICE: not an absolute path", device);
	snprintf(cfg.device, PATH_MAX, "%s", device);
	cfg.debug = debug && *debug && strcmp(debug, "0");
	if (getenv("FAKECAM_STAMP") && *getenv("FAKECAM_STAMP")) {
		const char *stamp = getenv("FAKECAM_STAMP");
		if (strcmp(stamp, "0") && strcmp(stamp, "1"))
			die("FAKECAM_STAMP: 0 or 1", stamp);
		cfg.stamp = !strcmp(stamp, "1");
	}
	list = env_copy("FAKECAM_MODES", "mjpeg:640x480@30/15,mjpeg:1280x720@30/15,mjpeg:320x240@30");
	for_each_item(list, add_mode);
	free(list);
	list = env_copy("FAKECAM_LINKS", "");
	for_each_item(list, add_link);
	free(list);
	list = env_copy("FAKECAM_FAULTS", "");
	for_each_item(list, add_fault);
	free(list);
	if (!cfg.nmodes)
		die("FAKECAM_MODES: no mode", "");
	snprintf(cfg.unplug_file, PATH_MAX, "%s", getenv("FAKECAM_UNPLUG_FILE") ? getenv("FAKECAM_UNPLUG_FILE") : "");
	cfg.active = 1;
	LOG("%s with %d modes (pid %d)\n", cfg.device, cfg.nmodes, getpid());
}

/* ------------------------------------------------------------------------------------------ */
/* Plugged or not                                                                              */
/*
 * Unplugging is a state every process that sees the camera must agree on (the feeder that
 * streams, a controller that checks the path, a feeder started after the unplug). With
 * FAKECAM_UNPLUG_FILE the state is that file:
 *   - absent: plugged in at FAKECAM_DEVICE;
 *   - present and empty (a test can simply create it): unplugged until it is removed;
 *   - "replug_at_ns=T\nnode=PATH\n" (written by the unplug= fault): unplugged until
 *     CLOCK_MONOTONIC (system-wide) reaches T, then plugged in at PATH (or FAKECAM_DEVICE).
 * The unplug= fault fires only while the file does not exist, so a camera is unplugged once per
 * file, not once per process. Without the file the state lives in this process only.
 */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* everything below */
static int local_unplugged;                              /* without a file: unplug= fired here */
static int64_t local_replug_at_ns;                       /* 0: never */
static unsigned unplugs_seen;                            /* unplugs this process noticed */
static int was_unplugged;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Fills node with where the camera is now; returns 1 if it is unplugged. */
static int plug_state(char node[PATH_MAX])
{
	int64_t replug_at = 0;
	int unplugged;
	char text[PATH_MAX + 64] = "";
	const char *moved_to = "";
	if (cfg.unplug_file[0]) {
		int fd = REAL(open)(cfg.unplug_file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			unplugged = 0;
		} else {
			ssize_t n = REAL(read)(fd, text, sizeof text - 1);
			char *line;
			REAL(close)(fd);
			text[n > 0 ? n : 0] = '\0';
			if ((line = strstr(text, "replug_at_ns=")))
				replug_at = strtoll(line + 13, NULL, 10);
			if ((line = strstr(text, "node="))) {
				line[strcspn(line, "\n")] = '\0';
				moved_to = line + 5;
			}
			unplugged = !replug_at || now_ns() < replug_at;
		}
	} else {
		replug_at = local_replug_at_ns;
		unplugged = local_unplugged && (!replug_at || now_ns() < replug_at);
		if (local_unplugged && !unplugged)
			moved_to = cfg.replug_node;
	}
	snprintf(node, PATH_MAX, "%s", *moved_to ? moved_to : cfg.device);
	return unplugged;
}

static void kill_all(void);

/* Called with the lock held: notes an unplug (open fds of before become dead for good). */
static int check_plugged(char node[PATH_MAX])
{
	int unplugged = plug_state(node);
	if (unplugged && !was_unplugged) {
		unplugs_seen++;
		LOG("camera unplugged\n");
		was_unplugged = 1;
		kill_all();
	} else if (!unplugged && was_unplugged) {
		LOG("camera plugged in at %s\n", node);
	}
	was_unplugged = unplugged;
	return !unplugged;
}

/* The unplug= fault, lock held: returns 1 if it fired now. */
static int fire_unplug(void)
{
	int64_t replug_at = cfg.replug_after_s >= 0 ? now_ns() + (int64_t)(cfg.replug_after_s * 1e9) : 0;
	if (cfg.unplug_file[0]) {
		char tmp[PATH_MAX + 32], text[PATH_MAX + 64];
		int fd, len;
		if (REAL(access)(cfg.unplug_file, F_OK) == 0)
			return 0; /* already fired (here or in another process) */
		len = snprintf(text, sizeof text, "replug_at_ns=%lld\nnode=%s\n", (long long)replug_at,
			       cfg.replug_node[0] ? cfg.replug_node : cfg.device);
		/* written whole under a temporary name, then renamed: readers never see half of it */
		snprintf(tmp, sizeof tmp, "%s.%d.tmp", cfg.unplug_file, getpid());
		fd = REAL(open)(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, text, len) != len || rename(tmp, cfg.unplug_file)) {
			fprintf(stderr, "fakecam: cannot write %s: %s\n", cfg.unplug_file, strerror(errno));
			if (fd >= 0)
				REAL(close)(fd);
			return 0;
		}
		REAL(close)(fd);
	} else {
		if (local_unplugged)
			return 0;
		local_unplugged = 1;
		local_replug_at_ns = replug_at;
	}
	LOG("fault: unplug (replug %s)\n", cfg.replug_after_s >= 0 ? "later" : "never");
	/* seen here at once, even if the replug is due before anyone looks again (replug=0) */
	unplugs_seen++;
	was_unplugged = 1;
	kill_all();
	return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Paths                                                                                       */

enum kind { K_NONE, K_ABSENT, K_CHR, K_LINK, K_DIR };

static int is_ours(const char *path)
{
	if (!cfg.active || !path || path[0] != '/')
		return 0;
	if (!strcmp(path, cfg.device) || (cfg.replug_node[0] && !strcmp(path, cfg.replug_node)))
		return 1;
	for (int i = 0; i < cfg.nlinks; i++)
		if (!strcmp(path, cfg.links[i]))
			return 1;
	for (int i = 0; i < cfg.ndirs; i++)
		if (!strcmp(path, cfg.dirs[i]))
			return 1;
	return 0;
}

/* What a path of ours is now (lock taken here); node gets the camera's current node. */
static enum kind classify(const char *path, char node[PATH_MAX])
{
	int plugged;
	if (!is_ours(path))
		return K_NONE;
	for (int i = 0; i < cfg.ndirs; i++)
		if (!strcmp(path, cfg.dirs[i]))
			return K_DIR;
	pthread_mutex_lock(&lock);
	plugged = check_plugged(node);
	pthread_mutex_unlock(&lock);
	if (!plugged)
		return K_ABSENT;
	if (!strcmp(path, node))
		return K_CHR;
	for (int i = 0; i < cfg.nlinks; i++)
		if (!strcmp(path, cfg.links[i]))
			return K_LINK;
	return K_ABSENT; /* the node before a replug at another number */
}

static unsigned node_minor(const char *node)
{
	size_t n = strlen(node);
	while (n && node[n - 1] >= '0' && node[n - 1] <= '9')
		n--;
	return strtoul(node + n, NULL, 10) & 0xff;
}

/* A struct stat for a kind of ours, from a real file of the same type (so every field is sane). */
static int fill_stat(enum kind kind, const char *node, struct stat *st)
{
	if (kind == K_ABSENT) {
		errno = ENOENT;
		return -1;
	}
	if (REAL(stat)(kind == K_DIR ? "/dev" : "/dev/null", st))
		return -1;
	if (kind == K_CHR) { /* /dev/videoN: character device 81:N, crw-rw---- root:video */
		st->st_mode = S_IFCHR | 0660;
		st->st_rdev = makedev(81, node_minor(node));
		st->st_ino = 0xfca0000 + node_minor(node);
	} else if (kind == K_LINK) {
		st->st_mode = S_IFLNK | 0777;
		st->st_size = strlen(node);
		st->st_rdev = 0;
		st->st_ino = 0xfcb0000;
	} else {
		st->st_ino = 0xfcc0000;
	}
	return 0;
}

/* follow: stat (a link is its node) or lstat (a link is a link). Returns -2 if not ours. */
static int fake_stat(const char *path, struct stat *st, int follow)
{
	char node[PATH_MAX];
	enum kind kind = classify(path, node);
	if (kind == K_NONE)
		return -2;
	if (kind == K_LINK && follow)
		kind = K_CHR;
	return fill_stat(kind, node, st);
}

static int fake_stat64(const char *path, struct stat64 *st, int follow)
{
	/* struct stat and struct stat64 are the same on 64-bit Linux; copied field by field anyway */
	struct stat s;
	int r = fake_stat(path, &s, follow);
	if (r == 0) {
		memset(st, 0, sizeof *st);
		st->st_dev = s.st_dev;
		st->st_ino = s.st_ino;
		st->st_mode = s.st_mode;
		st->st_nlink = s.st_nlink;
		st->st_uid = s.st_uid;
		st->st_gid = s.st_gid;
		st->st_rdev = s.st_rdev;
		st->st_size = s.st_size;
		st->st_blksize = s.st_blksize;
		st->st_blocks = s.st_blocks;
		st->st_atim = s.st_atim;
		st->st_mtim = s.st_mtim;
		st->st_ctim = s.st_ctim;
	}
	return r;
}

/* ------------------------------------------------------------------------------------------ */
/* The camera and its open files                                                               */

enum buf_state { B_DEQUEUED, B_QUEUED, B_DONE };

struct buffer {
	enum buf_state state;
	uint32_t bytesused, sequence;
	int broken; /* a fault broke this frame: V4L2_BUF_FLAG_ERROR with errorflag=1 */
	struct timeval timestamp;
	int maps; /* application mappings, for V4L2_BUF_FLAG_MAPPED */
};

/* An open file (what dup()s share): owner of the buffers when it allocated them. */
struct handle {
	int refs;   /* application fds that refer to it */
	int own;    /* our dup of the application's end: stays valid whatever the application closes */
	int peer;   /* our end: a byte per filled buffer; closed (-1) when the camera is unplugged */
	int killed; /* unplugged under it: dead for good (ENODEV, POLLERR) */
	struct handle *next; /* every open handle, to kill them all at an unplug */
	int nonblock;
	unsigned unplugs_at_open; /* a later unplug makes it dead for good (ENODEV) */
	char node[PATH_MAX];
	enum v4l2_priority priority;
};

static struct camera {
	/* the current format, device-wide as in uvcvideo */
	int mode;
	uint32_t rate;
	/* buffers, owned by one handle between REQBUFS and REQBUFS(0) or its close */
	struct handle *owner;
	int nbufs;
	size_t buf_size; /* page-aligned; buffer i is at offset i * buf_size */
	int memfd;
	unsigned char *map;
	struct buffer bufs[MAX_BUFFERS];
	int queued[MAX_BUFFERS], nqueued; /* FIFO of buffer indices waiting to be filled */
	int done[MAX_BUFFERS], ndone;     /* FIFO of filled ones waiting for DQBUF */
	/* streaming */
	int streaming, stop, thread_running, dead_mode;
	pthread_t thread;
	pthread_cond_t tick; /* wakes the frame thread early (STREAMOFF) */
	pthread_cond_t ready; /* wakes a blocking DQBUF */
	uint32_t sequence;
	uint64_t dropped;
} cam = {.memfd = -1};

static struct handle *fds[MAX_FDS]; /* application fd -> handle; read without the lock first */
static struct handle *handles;      /* every open handle */

static struct { void *addr; size_t len; int index; } maps[MAX_MAPS];
static int nmaps;

static struct handle *handle_of(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return NULL;
	return __atomic_load_n(&fds[fd], __ATOMIC_ACQUIRE);
}

/* Lock held: the camera went away under h. The application's end gets POLLERR|POLLHUP for good
 * (our end closed with unread data in it); a blocked DQBUF wakes up to fail ENODEV. */
static void kill_handle(struct handle *h)
{
	if (h->killed)
		return;
	h->killed = 1;
	if (send(h->own, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
		LOG("cannot leave data at our end: %s\n", strerror(errno));
	REAL(close)(h->peer);
	h->peer = -1;
	pthread_cond_broadcast(&cam.ready);
}

static void kill_all(void)
{
	for (struct handle *h = handles; h; h = h->next)
		kill_handle(h);
}

/* Lock held: whether h is dead (an unplug since it was opened, or the node moved), killing it if
 * that just happened. */
static int handle_dead(struct handle *h)
{
	char node[PATH_MAX];
	int plugged = check_plugged(node);
	if (!h->killed && (!plugged || h->unplugs_at_open != unplugs_seen || strcmp(node, h->node)))
		kill_handle(h);
	return h->killed;
}

static void init_conds(void)
{
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&cam.tick, &attr);
	pthread_cond_init(&cam.ready, &attr);
	pthread_condattr_destroy(&attr);
}

static pthread_once_t conds_once = PTHREAD_ONCE_INIT;

static int fake_open(const char *path, int flags)
{
	char node[PATH_MAX];
	enum kind kind = classify(path, node);
	struct handle *h;
	int fd, pair[2];
	if (kind == K_NONE)
		return -2;
	if (kind == K_DIR) {
		errno = EISDIR; /* (opening the fake directories is not supported) */
		return -1;
	}
	if (kind == K_ABSENT) {
		errno = ENOENT;
		return -1;
	}
	pthread_once(&conds_once, init_conds);
	if (socketpair(AF_UNIX, SOCK_STREAM | (flags & O_CLOEXEC ? SOCK_CLOEXEC : 0), 0, pair))
		return -1;
	fd = pair[0];
	if (fd >= MAX_FDS || !(h = calloc(1, sizeof *h))) {
		REAL(close)(pair[0]);
		REAL(close)(pair[1]);
		errno = EMFILE;
		return -1;
	}
	fcntl(pair[1], F_SETFD, FD_CLOEXEC);
	h->refs = 1;
	h->own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	h->peer = pair[1];
	h->nonblock = !!(flags & O_NONBLOCK);
	h->priority = V4L2_PRIORITY_DEFAULT;
	snprintf(h->node, PATH_MAX, "%s", node);
	pthread_mutex_lock(&lock);
	h->unplugs_at_open = unplugs_seen;
	h->next = handles;
	handles = h;
	__atomic_store_n(&fds[fd], h, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	LOG("open %s -> fd %d\n", path, fd);
	return fd;
}

/* ------------------------------------------------------------------------------------------ */
/* Frames                                                                                      */

/*
 * The capture-time stamp, as streamer/media/stamp.py lays it out (keep the two in step): a band
 * of STAMP_ROWS x STAMP_COLUMNS square luma blocks at the top left, black (16) or white (235) on
 * neutral chroma, carrying 32 bits of the capture time in ms since the Unix epoch (mod 2**32) and
 * 16 check bits (CRC-32 of a salt and the value, big-endian, truncated), most significant first,
 * row by row. Blocks are min(width / 24, height / 6) pixels; below 6 there is no stamp (too small
 * to survive coding), as stamp.block_size says.
 */
#define STAMP_COLUMNS 24
#define STAMP_ROWS 2
#define STAMP_BITS (STAMP_COLUMNS * STAMP_ROWS)
#define STAMP_MIN_BLOCK 6
static const char STAMP_SALT[] = "streamer-stamp-1";

static uint32_t stamp_block(uint32_t w, uint32_t h)
{
	uint32_t block = w / STAMP_COLUMNS < h / (3 * STAMP_ROWS) ? w / STAMP_COLUMNS : h / (3 * STAMP_ROWS);
	return block >= STAMP_MIN_BLOCK ? block : 0;
}

/* zlib's CRC-32 (reflected, polynomial 0xEDB88320), bit by bit: 20 bytes a frame, no table needed. */
static uint32_t crc32_of(const unsigned char *data, size_t len)
{
	uint32_t crc = 0xFFFFFFFFu;
	for (size_t i = 0; i < len; i++) {
		crc ^= data[i];
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
	}
	return ~crc;
}

/* The 48 bits of the stamp for a capture time in ms since the epoch. */
static void stamp_bits(uint64_t ms, uint8_t bits[STAMP_BITS])
{
	uint32_t value = (uint32_t)ms; /* modulo 2**32, as stamp.ms_value */
	unsigned char salted[sizeof STAMP_SALT - 1 + 4];
	uint64_t word;
	memcpy(salted, STAMP_SALT, sizeof STAMP_SALT - 1);
	for (int i = 0; i < 4; i++)
		salted[sizeof STAMP_SALT - 1 + i] = value >> (24 - 8 * i);
	word = (uint64_t)value << 16 | (crc32_of(salted, sizeof salted) & 0xFFFF);
	for (int i = 0; i < STAMP_BITS; i++)
		bits[i] = word >> (STAMP_BITS - 1 - i) & 1;
}

struct render {
	uint32_t width, height, frame;
	uint32_t stamp_block; /* 0: no stamp drawn */
	uint8_t stamp[STAMP_BITS];
	int broken; /* set by render_frame: a fault was applied to this frame */
	unsigned char *row; /* one row of Y, Cb, Cr triplets */
	struct jpeg_compress_struct jpeg;
	struct jpeg_error_mgr jerr;
	jmp_buf on_error;
	unsigned char *scratch;
	unsigned long scratch_size;
};

/* Seven-segment digit masks, segments a..g as bits 0..6. */
static const uint8_t SEGMENTS[10] = {0x3F, 0x06, 0x5B, 0x4F, 0x66, 0x6D, 0x7D, 0x07, 0x7F, 0x6F};

static int segment_on(uint8_t mask, uint32_t u, uint32_t v, uint32_t dw, uint32_t dh, uint32_t t)
{
	int upper = v < dh / 2;
	return ((mask & 1) && v < t) || ((mask & 2) && u >= dw - t && upper) ||
	       ((mask & 4) && u >= dw - t && !upper) || ((mask & 8) && v >= dh - t) ||
	       ((mask & 16) && u < t && !upper) || ((mask & 32) && u < t && upper) ||
	       ((mask & 64) && v + t / 2 >= dh / 2 && v < dh / 2 + (t + 1) / 2);
}

/*
 * One row of the picture as YCbCr: moving diagonal stripes over a colour gradient (so
 * consecutive frames differ everywhere), the frame number as a strip of STRIP_BITS black/white
 * blocks in the top 16 rows (machine-readable after decoding: sample each block's centre), and
 * as digits below it.
 */
static void draw_row(struct render *r, uint32_t y)
{
	uint32_t w = r->width, h = r->height, f = r->frame, sb = r->stamp_block;
	/* with a stamp, the frame number's strip and digits move down below its band */
	uint32_t block = w / STRIP_BITS, strip_top = STAMP_ROWS * sb, strip_h = 16;
	uint32_t dh = h / 8, dw = dh / 2, t = dh / 8 ? dh / 8 : 1, gap = dw / 3 + 1;
	uint32_t top = strip_top + strip_h + 4;
	char digits[16];
	int ndigits = snprintf(digits, sizeof digits, "%u", f);
	for (uint32_t x = 0; x < w; x++) {
		unsigned char *p = r->row + 3 * x;
		if (y < strip_top) { /* the stamp's band; right of its blocks, neutral grey */
			uint32_t column = x / sb;
			int bit = column < STAMP_COLUMNS && r->stamp[(y / sb) * STAMP_COLUMNS + column];
			p[0] = column < STAMP_COLUMNS ? (bit ? 235 : 16) : 128;
			p[1] = p[2] = 128;
			continue;
		}
		if (y - strip_top < strip_h) {
			uint32_t bit = x / block;
			p[0] = bit < STRIP_BITS && (f >> (STRIP_BITS - 1 - bit)) & 1 ? 235 : 16;
			p[1] = p[2] = 128;
			continue;
		}
		if (y >= top && y < top + dh && x >= 4 && x < 4 + ndigits * (dw + gap)) {
			uint32_t i = (x - 4) / (dw + gap), u = (x - 4) % (dw + gap);
			int on = u < dw && segment_on(SEGMENTS[digits[i] - '0'], u, y - top, dw, dh, t);
			p[0] = on ? 235 : 16;
			p[1] = p[2] = 128;
			continue;
		}
		p[0] = ((x + y + 6 * f) / 24) & 1 ? 170 : 90;
		p[1] = 64 + x * 128 / w;
		p[2] = 64 + y * 128 / h;
	}
}

static void jpeg_failed(j_common_ptr info)
{
	struct render *r = (struct render *)((char *)info - offsetof(struct render, jpeg));
	longjmp(r->on_error, 1);
}

/* Encodes frame r->frame as a 4:2:2 JPEG (what UVC webcams send) into r->scratch; returns its size. */
static unsigned long encode_jpeg(struct render *r, const char *comment)
{
	unsigned char *out = r->scratch;
	unsigned long size = r->scratch_size;
	if (setjmp(r->on_error)) {
		jpeg_abort_compress(&r->jpeg);
		return 0;
	}
	jpeg_mem_dest(&r->jpeg, &out, &size);
	r->jpeg.image_width = r->width;
	r->jpeg.image_height = r->height;
	r->jpeg.input_components = 3;
	r->jpeg.in_color_space = JCS_YCbCr;
	jpeg_set_defaults(&r->jpeg);
	jpeg_set_quality(&r->jpeg, 80, TRUE);
	r->jpeg.dct_method = JDCT_IFAST;
	r->jpeg.comp_info[0].h_samp_factor = 2;
	r->jpeg.comp_info[0].v_samp_factor = 1;
	jpeg_start_compress(&r->jpeg, TRUE);
	jpeg_write_marker(&r->jpeg, JPEG_COM, (const JOCTET *)comment, strlen(comment));
	for (uint32_t y = 0; y < r->height; y++) {
		JSAMPROW row = r->row;
		draw_row(r, y);
		jpeg_write_scanlines(&r->jpeg, &row, 1);
	}
	jpeg_finish_compress(&r->jpeg);
	if (out != r->scratch) { /* libjpeg outgrew our buffer and made its own: keep that one */
		free(r->scratch);
		r->scratch = out;
		r->scratch_size = size;
	}
	return size;
}

/* Where the entropy-coded data starts (after the SOS segment), or 0. */
static size_t scan_start(const unsigned char *data, size_t len)
{
	for (size_t i = 2; i + 4 < len; i++)
		if (data[i] == 0xFF && data[i + 1] == 0xDA)
			return i + 2 + (data[i + 2] << 8 | data[i + 3]);
	return 0;
}

/* Draws frame r->frame into dst (capacity cap) in the mode's format; returns bytes used. */
static uint32_t render_frame(struct render *r, uint32_t fourcc, unsigned char *dst, size_t cap)
{
	enum { NONE, TRUNCATE, CORRUPT } fault = NONE;
	char comment[64];
	unsigned long len;
	r->broken = 0;
	if (fourcc == V4L2_PIX_FMT_YUYV) { /* raw 4:2:2: Y0 U Y1 V per pixel pair */
		size_t need = (size_t)r->width * r->height * 2;
		if (need > cap)
			return 0;
		for (uint32_t y = 0; y < r->height; y++) {
			unsigned char *out = dst + (size_t)y * r->width * 2;
			draw_row(r, y);
			for (uint32_t x = 0; x + 1 < r->width; x += 2) {
				const unsigned char *a = r->row + 3 * x, *b = a + 3;
				out[2 * x] = a[0];
				out[2 * x + 1] = (a[1] + b[1]) / 2;
				out[2 * x + 2] = b[0];
				out[2 * x + 3] = (a[2] + b[2]) / 2;
			}
		}
		return need;
	}
	if (cfg.truncate_every && r->frame % cfg.truncate_every == 0)
		fault = TRUNCATE;
	else if (cfg.corrupt_every && r->frame % cfg.corrupt_every == 0)
		fault = CORRUPT;
	r->broken = fault != NONE;
	snprintf(comment, sizeof comment, "fakecam frame=%u%s", r->frame,
		 fault == TRUNCATE ? " fault=truncate" : fault == CORRUPT ? " fault=corrupt" : "");
	len = encode_jpeg(r, comment);
	if (!len || len > cap)
		return 0;
	memcpy(dst, r->scratch, len);
	if (fault == TRUNCATE) {
		len /= 2; /* cut mid-scan: no end-of-image marker */
		LOG("fault: frame %u truncated to %lu bytes\n", r->frame, len);
	} else if (fault == CORRUPT) {
		size_t start = scan_start(dst, len), scan = start ? len - 2 - start : 0;
		if (scan > 64) { /* drop the middle quarter of the scan, keep the end-of-image marker */
			size_t from = start + scan * 3 / 8, cut = scan / 4;
			memmove(dst + from, dst + from + cut, len - from - cut);
			len -= cut;
			LOG("fault: frame %u corrupted (%zu bytes of its scan lost)\n", r->frame, cut);
		}
	}
	return len;
}

static void ts_add(struct timespec *ts, int64_t ns)
{
	int64_t total = ts->tv_nsec + ns;
	ts->tv_sec += total / 1000000000LL;
	ts->tv_nsec = total % 1000000000LL;
}

/* Lock held: one more filled buffer waits, the application's end becomes (or stays) readable. */
static void signal_frame(struct handle *h)
{
	if (h->peer >= 0 && send(h->peer, "f", 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
		LOG("cannot signal a frame: %s\n", strerror(errno));
}

/* Lock held: a filled buffer was taken (or all were dropped): its byte goes. Never on a killed
 * handle: reading the pending ECONNRESET would clear its POLLERR. */
static void take_signal(struct handle *h, int all)
{
	char bytes[MAX_BUFFERS];
	if (!h->killed)
		while (recv(h->own, bytes, all ? sizeof bytes : 1, MSG_DONTWAIT) > 0 && all)
			;
}

/*
 * The frame thread: one frame per period of the mode's rate (or the slow= rate), timed on
 * CLOCK_MONOTONIC with absolute deadlines; it renders outside the lock into a buffer that is
 * neither queued nor done meanwhile (STREAMOFF and the freeing of buffers join this thread first).
 */
static void *frame_thread(void *unused)
{
	struct render r = {0};
	struct timespec next;
	const struct mode *m = &cfg.modes[cam.mode];
	uint32_t fourcc = m->fourcc;
	int64_t period = 1000000000LL / cam.rate;
	(void)unused;
	/* named, so that a benchmark can tell the fake camera's CPU (its JPEG encodes) from that of
	 * the program it is preloaded into: /proc/PID/task/TID/comm */
	pthread_setname_np(pthread_self(), "fakecam");
	r.width = m->width;
	r.height = m->height;
	r.stamp_block = cfg.stamp ? stamp_block(m->width, m->height) : 0;
	if (cfg.stamp && !r.stamp_block)
		LOG("%ux%u is too small for the stamp: frames go without\n", m->width, m->height);
	r.row = malloc((size_t)m->width * 3);
	r.scratch_size = (size_t)m->width * m->height;
	r.scratch = malloc(r.scratch_size);
	r.jpeg.err = jpeg_std_error(&r.jerr);
	r.jerr.error_exit = jpeg_failed;
	jpeg_create_compress(&r.jpeg);
	clock_gettime(CLOCK_MONOTONIC, &next);
	pthread_mutex_lock(&lock);
	while (!cam.stop) {
		char node[PATH_MAX];
		uint32_t frame;
		int index;
		ts_add(&next, period);
		while (!cam.stop && pthread_cond_timedwait(&cam.tick, &lock, &next) != ETIMEDOUT)
			;
		if (cam.stop)
			break;
		if (!check_plugged(node) || handle_dead(cam.owner))
			break; /* killed: its poller wakes with POLLERR, DQBUF says ENODEV */
		frame = cam.sequence + 1;
		if (cfg.unplug_after >= 0 && frame > (uint32_t)cfg.unplug_after && fire_unplug())
			break; /* every open handle killed */
		if (cam.dead_mode || (cfg.stall_after >= 0 && frame > (uint32_t)cfg.stall_after))
			continue; /* listed but never delivers / froze: the clock ticks, nothing comes */
		if (cfg.slow_rate && frame > cfg.slow_after)
			period = 1000000000LL / cfg.slow_rate;
		cam.sequence++;
		if (!cam.nqueued) { /* the application holds every buffer: this frame is lost */
			cam.dropped++;
			continue;
		}
		index = cam.queued[0];
		memmove(cam.queued, cam.queued + 1, --cam.nqueued * sizeof cam.queued[0]);
		pthread_mutex_unlock(&lock);
		{
			struct timespec taken = next; /* the frame's capture time: its scheduled tick */
			uint32_t used;
			r.frame = frame;
			if (r.stamp_block) {
				/* The stamp carries the buffer's own timestamp (the tick, on CLOCK_MONOTONIC) on
				 * the wall clock: drawn before the encode, as a camera's exposure precedes its
				 * transfer, so a latency read from it includes this frame's encode too. */
				struct timespec mono, wall;
				int64_t wall_ns;
				clock_gettime(CLOCK_MONOTONIC, &mono);
				clock_gettime(CLOCK_REALTIME, &wall);
				wall_ns = (int64_t)wall.tv_sec * 1000000000LL + wall.tv_nsec -
					  ((int64_t)mono.tv_sec * 1000000000LL + mono.tv_nsec) +
					  (int64_t)taken.tv_sec * 1000000000LL + taken.tv_nsec;
				stamp_bits((uint64_t)((wall_ns + 500000) / 1000000), r.stamp);
			}
			used = render_frame(&r, fourcc, cam.map + (size_t)index * cam.buf_size, cam.buf_size);
			pthread_mutex_lock(&lock);
			cam.bufs[index].bytesused = used;
			cam.bufs[index].broken = r.broken;
			cam.bufs[index].sequence = frame - 1;
			cam.bufs[index].timestamp.tv_sec = taken.tv_sec;
			cam.bufs[index].timestamp.tv_usec = taken.tv_nsec / 1000;
		}
		cam.bufs[index].state = B_DONE;
		cam.done[cam.ndone++] = index;
		signal_frame(cam.owner);
		pthread_cond_broadcast(&cam.ready);
		/* A camera's clock does not slip when this thread runs late on a loaded machine: the
		 * ticks stay on their grid and late frames follow at once, with their own times. Only
		 * more than a second behind (a stopped process) are the missed frames skipped, as lost. */
		{
			struct timespec now;
			int64_t late;
			clock_gettime(CLOCK_MONOTONIC, &now);
			late = (now.tv_sec - next.tv_sec) * 1000000000LL + now.tv_nsec - next.tv_nsec;
			if (late > 1000000000LL) {
				cam.sequence += late / period;
				cam.dropped += late / period;
				ts_add(&next, late / period * period);
			}
		}
	}
	pthread_mutex_unlock(&lock);
	jpeg_destroy_compress(&r.jpeg);
	free(r.row);
	free(r.scratch);
	return NULL;
}

/* Stops the frame thread and returns every buffer to the application; called without the lock. */
static void stream_stop(void)
{
	pthread_t thread;
	pthread_mutex_lock(&lock);
	if (!cam.thread_running) {
		cam.streaming = 0;
		pthread_mutex_unlock(&lock);
		return;
	}
	cam.stop = 1;
	cam.thread_running = 0;
	thread = cam.thread;
	pthread_cond_broadcast(&cam.tick);
	pthread_mutex_unlock(&lock);
	pthread_join(thread, NULL);
	pthread_mutex_lock(&lock);
	cam.streaming = 0;
	cam.stop = 0;
	cam.nqueued = cam.ndone = 0;
	for (int i = 0; i < cam.nbufs; i++)
		cam.bufs[i].state = B_DEQUEUED;
	if (cam.owner) /* no buffer waits any more */
		take_signal(cam.owner, 1);
	pthread_cond_broadcast(&cam.ready);
	pthread_mutex_unlock(&lock);
}

/* Lock held, not streaming: frees the buffers (mappings the application keeps stay valid). */
static void free_buffers(void)
{
	if (cam.map)
		REAL(munmap)(cam.map, cam.nbufs * cam.buf_size);
	if (cam.memfd >= 0)
		REAL(close)(cam.memfd);
	cam.map = NULL;
	cam.memfd = -1;
	cam.nbufs = 0;
	cam.owner = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* ioctls                                                                                      */

static const struct mode *current_mode(void) { return &cfg.modes[cam.mode]; }

static int has_format(uint32_t fourcc)
{
	for (int i = 0; i < cfg.nmodes; i++)
		if (cfg.modes[i].fourcc == fourcc)
			return 1;
	return 0;
}

/* The n-th distinct format in the order the modes list them, or 0. */
static uint32_t nth_format(uint32_t n)
{
	uint32_t seen[MAX_MODES];
	int nseen = 0;
	for (int i = 0; i < cfg.nmodes; i++) {
		int known = 0;
		for (int j = 0; j < nseen; j++)
			known |= seen[j] == cfg.modes[i].fourcc;
		if (!known) {
			if ((uint32_t)nseen == n)
				return cfg.modes[i].fourcc;
			seen[nseen++] = cfg.modes[i].fourcc;
		}
	}
	return 0;
}

static int find_mode(uint32_t fourcc, uint32_t w, uint32_t h)
{
	for (int i = 0; i < cfg.nmodes; i++)
		if (cfg.modes[i].fourcc == fourcc && cfg.modes[i].width == w && cfg.modes[i].height == h)
			return i;
	return -1;
}

/* As uvcvideo: an unknown format becomes the first one, a size the nearest offered one. */
static int nearest_mode(uint32_t fourcc, uint32_t w, uint32_t h)
{
	int best = -1;
	int64_t best_d = INT64_MAX;
	if (!has_format(fourcc))
		fourcc = nth_format(0);
	for (int i = 0; i < cfg.nmodes; i++) {
		const struct mode *m = &cfg.modes[i];
		int64_t dw = (int64_t)m->width - w, dh = (int64_t)m->height - h, d = dw * dw + dh * dh;
		if (m->fourcc == fourcc && d < best_d) {
			best = i;
			best_d = d;
		}
	}
	return best;
}

static int is_dead(const struct mode *m, uint32_t rate)
{
	for (int i = 0; i < cfg.ndead; i++) {
		const struct dead *d = &cfg.dead[i];
		if ((!d->fourcc || d->fourcc == m->fourcc) && d->width == m->width && d->height == m->height &&
		    (!d->rate || d->rate == rate))
			return 1;
	}
	return 0;
}

static size_t image_size(const struct mode *m)
{
	/* MJPEG: the most a frame may take (uvcvideo reports the camera's dwMaxVideoFrameBufferSize,
	 * typically width x height x 2, as for raw YUYV) */
	return (size_t)m->width * m->height * 2;
}

static void fill_pix(struct v4l2_pix_format *p, const struct mode *m)
{
	memset(p, 0, sizeof *p);
	p->width = m->width;
	p->height = m->height;
	p->pixelformat = m->fourcc;
	p->field = V4L2_FIELD_NONE;
	p->bytesperline = m->fourcc == V4L2_PIX_FMT_YUYV ? m->width * 2 : 0;
	p->sizeimage = image_size(m);
	p->colorspace = V4L2_COLORSPACE_SRGB;
	p->ycbcr_enc = V4L2_YCBCR_ENC_601;
	p->priv = V4L2_PIX_FMT_PRIV_MAGIC;
}

static uint32_t nearest_rate(const struct mode *m, uint32_t num, uint32_t den)
{
	uint32_t best = m->rates[0];
	double want, best_d = 1e18;
	if (!num || !den)
		return best;
	want = (double)den / num;
	for (int i = 0; i < m->nrates; i++) {
		double d = m->rates[i] > want ? m->rates[i] - want : want - m->rates[i];
		if (d < best_d) {
			best_d = d;
			best = m->rates[i];
		}
	}
	return best;
}

static void fill_buffer(struct v4l2_buffer *b, int i)
{
	const struct buffer *buf = &cam.bufs[i];
	uint32_t type = b->type;
	memset(b, 0, sizeof *b);
	b->index = i;
	b->type = type;
	b->memory = V4L2_MEMORY_MMAP;
	b->m.offset = i * cam.buf_size;
	b->length = cam.buf_size;
	b->field = V4L2_FIELD_NONE;
	b->flags = V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | V4L2_BUF_FLAG_TSTAMP_SRC_SOE;
	if (buf->maps)
		b->flags |= V4L2_BUF_FLAG_MAPPED;
	if (buf->state == B_QUEUED)
		b->flags |= V4L2_BUF_FLAG_QUEUED;
	if (buf->state == B_DONE)
		b->flags |= V4L2_BUF_FLAG_DONE;
	if (buf->state != B_QUEUED && buf->broken && cfg.error_flag)
		b->flags |= V4L2_BUF_FLAG_ERROR;
	if (buf->state != B_QUEUED) {
		b->bytesused = buf->bytesused;
		b->sequence = buf->sequence;
		b->timestamp = buf->timestamp;
	}
}

static const char *ioctl_name(unsigned long request)
{
	switch (request) {
#define NAME(x) case x: return #x;
	NAME(VIDIOC_QUERYCAP) NAME(VIDIOC_ENUM_FMT) NAME(VIDIOC_G_FMT) NAME(VIDIOC_S_FMT)
	NAME(VIDIOC_TRY_FMT) NAME(VIDIOC_ENUM_FRAMESIZES) NAME(VIDIOC_ENUM_FRAMEINTERVALS)
	NAME(VIDIOC_G_PARM) NAME(VIDIOC_S_PARM) NAME(VIDIOC_REQBUFS) NAME(VIDIOC_QUERYBUF)
	NAME(VIDIOC_QBUF) NAME(VIDIOC_DQBUF) NAME(VIDIOC_STREAMON) NAME(VIDIOC_STREAMOFF)
	NAME(VIDIOC_ENUMINPUT) NAME(VIDIOC_G_INPUT) NAME(VIDIOC_S_INPUT) NAME(VIDIOC_QUERYCTRL)
	NAME(VIDIOC_QUERY_EXT_CTRL) NAME(VIDIOC_G_CTRL) NAME(VIDIOC_S_CTRL) NAME(VIDIOC_QUERYMENU)
	NAME(VIDIOC_G_EXT_CTRLS) NAME(VIDIOC_S_EXT_CTRLS) NAME(VIDIOC_TRY_EXT_CTRLS)
	NAME(VIDIOC_G_PRIORITY) NAME(VIDIOC_S_PRIORITY) NAME(VIDIOC_CREATE_BUFS) NAME(VIDIOC_EXPBUF)
	NAME(VIDIOC_G_SELECTION) NAME(VIDIOC_CROPCAP) NAME(VIDIOC_ENUMSTD) NAME(VIDIOC_G_STD)
	NAME(VIDIOC_SUBSCRIBE_EVENT) NAME(VIDIOC_DQEVENT) NAME(VIDIOC_ENUMAUDIO) NAME(VIDIOC_G_TUNER)
#undef NAME
	default:
		return NULL;
	}
}

/* Lock held. Returns 0 or an errno value. */
static int do_ioctl(struct handle *h, unsigned long request, void *arg)
{
	const struct mode *m;
	if (handle_dead(h))
		return ENODEV; /* an unplugged camera answers nothing, to old fds for good */
	if (!cam.rate)
		cam.rate = cfg.modes[0].rates[0]; /* the default format: the first mode, its first rate */
	switch (request) {
	case VIDIOC_QUERYCAP: {
		struct v4l2_capability *c = arg;
		memset(c, 0, sizeof *c);
		/* "uvcvideo": GStreamer treats it as the USB webcam it stands in for */
		snprintf((char *)c->driver, sizeof c->driver, "uvcvideo");
		snprintf((char *)c->card, sizeof c->card, CARD);
		snprintf((char *)c->bus_info, sizeof c->bus_info, "usb-fakecam-1");
		c->version = KERNEL_VERSION(6, 1, 0);
		c->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING | V4L2_CAP_EXT_PIX_FORMAT;
		c->capabilities = c->device_caps | V4L2_CAP_DEVICE_CAPS;
		return 0;
	}
	case VIDIOC_ENUM_FMT: {
		struct v4l2_fmtdesc *f = arg;
		uint32_t fourcc = f->type == V4L2_BUF_TYPE_VIDEO_CAPTURE ? nth_format(f->index) : 0;
		uint32_t index = f->index, type = f->type;
		if (!fourcc)
			return EINVAL;
		memset(f, 0, sizeof *f);
		f->index = index;
		f->type = type;
		f->pixelformat = fourcc;
		f->flags = fourcc == V4L2_PIX_FMT_MJPEG ? V4L2_FMT_FLAG_COMPRESSED : 0;
		snprintf((char *)f->description, sizeof f->description, "%s",
			 fourcc == V4L2_PIX_FMT_MJPEG ? "Motion-JPEG" : "YUYV 4:2:2");
		return 0;
	}
	case VIDIOC_ENUM_FRAMESIZES: {
		struct v4l2_frmsizeenum *s = arg;
		uint32_t n = 0;
		for (int i = 0; i < cfg.nmodes; i++) {
			if (cfg.modes[i].fourcc != s->pixel_format || n++ != s->index)
				continue;
			s->type = V4L2_FRMSIZE_TYPE_DISCRETE;
			s->discrete.width = cfg.modes[i].width;
			s->discrete.height = cfg.modes[i].height;
			memset(s->reserved, 0, sizeof s->reserved);
			return 0;
		}
		return EINVAL;
	}
	case VIDIOC_ENUM_FRAMEINTERVALS: {
		struct v4l2_frmivalenum *v = arg;
		int i = find_mode(v->pixel_format, v->width, v->height);
		if (i < 0 || v->index >= (uint32_t)cfg.modes[i].nrates)
			return EINVAL;
		v->type = V4L2_FRMIVAL_TYPE_DISCRETE;
		v->discrete.numerator = 1;
		v->discrete.denominator = cfg.modes[i].rates[v->index];
		memset(v->reserved, 0, sizeof v->reserved);
		return 0;
	}
	case VIDIOC_G_FMT: {
		struct v4l2_format *f = arg;
		if (f->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
			return EINVAL;
		fill_pix(&f->fmt.pix, current_mode());
		return 0;
	}
	case VIDIOC_TRY_FMT:
	case VIDIOC_S_FMT: {
		struct v4l2_format *f = arg;
		int i;
		if (f->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
			return EINVAL;
		i = nearest_mode(f->fmt.pix.pixelformat, f->fmt.pix.width, f->fmt.pix.height);
		if (request == VIDIOC_S_FMT) {
			if (cam.nbufs || cam.streaming)
				return EBUSY; /* as vb2: not while buffers are allocated */
			if (i != cam.mode) {
				/* a new frame size starts at its first (default) interval unless it also has
				 * the current one, as uvcvideo keeps it */
				uint32_t keep = 0;
				for (int r = 0; r < cfg.modes[i].nrates; r++)
					keep |= cfg.modes[i].rates[r] == cam.rate;
				if (!keep)
					cam.rate = cfg.modes[i].rates[0];
				cam.mode = i;
			}
		}
		fill_pix(&f->fmt.pix, &cfg.modes[i]);
		return 0;
	}
	case VIDIOC_G_PARM:
	case VIDIOC_S_PARM: {
		struct v4l2_streamparm *p = arg;
		if (p->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
			return EINVAL;
		m = current_mode();
		if (request == VIDIOC_S_PARM) {
			if (cam.streaming)
				return EBUSY;
			cam.rate = nearest_rate(m, p->parm.capture.timeperframe.numerator,
						p->parm.capture.timeperframe.denominator);
		}
		memset(&p->parm, 0, sizeof p->parm);
		p->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
		p->parm.capture.timeperframe.numerator = 1;
		p->parm.capture.timeperframe.denominator = cam.rate;
		return 0;
	}
	case VIDIOC_ENUMINPUT: {
		struct v4l2_input *in = arg;
		if (in->index != 0)
			return EINVAL;
		memset(in, 0, sizeof *in);
		snprintf((char *)in->name, sizeof in->name, "Camera 1");
		in->type = V4L2_INPUT_TYPE_CAMERA;
		return 0;
	}
	case VIDIOC_G_INPUT:
		*(int *)arg = 0;
		return 0;
	case VIDIOC_S_INPUT:
		return *(int *)arg == 0 ? 0 : EINVAL;
	case VIDIOC_G_PRIORITY:
		*(enum v4l2_priority *)arg = h->priority;
		return 0;
	case VIDIOC_S_PRIORITY:
		if (*(enum v4l2_priority *)arg > V4L2_PRIORITY_RECORD)
			return EINVAL;
		h->priority = *(enum v4l2_priority *)arg;
		return 0;
	/* Controls: this camera has none. Asked about one, a driver says EINVAL. */
	case VIDIOC_QUERYCTRL:
	case VIDIOC_QUERY_EXT_CTRL:
	case VIDIOC_QUERYMENU:
	case VIDIOC_G_CTRL:
	case VIDIOC_S_CTRL:
		return EINVAL;
	case VIDIOC_G_EXT_CTRLS:
	case VIDIOC_S_EXT_CTRLS:
	case VIDIOC_TRY_EXT_CTRLS: {
		struct v4l2_ext_controls *c = arg;
		if (!c->count)
			return 0; /* the documented way to ask whether these ioctls exist */
		c->error_idx = c->count;
		return EINVAL;
	}
	case VIDIOC_REQBUFS: {
		struct v4l2_requestbuffers *rb = arg;
		size_t size;
		if (rb->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || rb->memory != V4L2_MEMORY_MMAP)
			return EINVAL; /* MMAP only (GStreamer probes the others and skips them) */
		if (cam.owner && cam.owner != h)
			return EBUSY;
		if (cam.streaming)
			return EBUSY; /* the caller stops streaming first (STREAMOFF) */
		free_buffers();
		memset(rb->reserved, 0, sizeof rb->reserved);
		rb->capabilities = V4L2_BUF_CAP_SUPPORTS_MMAP | V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS;
		if (!rb->count)
			return 0;
		if (rb->count > MAX_BUFFERS)
			rb->count = MAX_BUFFERS;
		size = (image_size(current_mode()) + 4095) & ~(size_t)4095;
		cam.memfd = memfd_create("fakecam-buffers", MFD_CLOEXEC);
		if (cam.memfd < 0 || ftruncate(cam.memfd, size * rb->count) ||
		    (cam.map = REAL(mmap)(NULL, size * rb->count, PROT_READ | PROT_WRITE, MAP_SHARED, cam.memfd,
					  0)) == MAP_FAILED) {
			int err = errno;
			cam.map = NULL;
			free_buffers();
			return err;
		}
		cam.nbufs = rb->count;
		cam.buf_size = size;
		cam.owner = h;
		memset(cam.bufs, 0, sizeof cam.bufs);
		return 0;
	}
	case VIDIOC_QUERYBUF: {
		struct v4l2_buffer *b = arg;
		if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->index >= (uint32_t)cam.nbufs)
			return EINVAL;
		fill_buffer(b, b->index);
		return 0;
	}
	case VIDIOC_QBUF: {
		struct v4l2_buffer *b = arg;
		if (cam.owner != h)
			return cam.owner ? EBUSY : EINVAL;
		if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->memory != V4L2_MEMORY_MMAP ||
		    b->index >= (uint32_t)cam.nbufs || cam.bufs[b->index].state != B_DEQUEUED)
			return EINVAL;
		cam.bufs[b->index].state = B_QUEUED;
		cam.queued[cam.nqueued++] = b->index;
		fill_buffer(b, b->index);
		return 0;
	}
	case VIDIOC_DQBUF: {
		struct v4l2_buffer *b = arg;
		int i;
		if (cam.owner != h)
			return cam.owner ? EBUSY : EINVAL;
		if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->memory != V4L2_MEMORY_MMAP)
			return EINVAL;
		while (!cam.ndone) {
			if (!cam.streaming)
				return EINVAL;
			if (h->nonblock)
				return EAGAIN;
			pthread_cond_wait(&cam.ready, &lock);
			if (handle_dead(h))
				return ENODEV;
		}
		i = cam.done[0];
		memmove(cam.done, cam.done + 1, --cam.ndone * sizeof cam.done[0]);
		cam.bufs[i].state = B_DEQUEUED;
		take_signal(h, 0);
		fill_buffer(b, i);
		return 0;
	}
	case VIDIOC_STREAMON: {
		if (*(int *)arg != V4L2_BUF_TYPE_VIDEO_CAPTURE)
			return EINVAL;
		if (cam.owner != h)
			return cam.owner ? EBUSY : EINVAL;
		if (cam.streaming)
			return 0;
		cam.streaming = 1;
		cam.sequence = 0;
		cam.dropped = 0;
		cam.dead_mode = is_dead(current_mode(), cam.rate);
		if (pthread_create(&cam.thread, NULL, frame_thread, NULL)) {
			cam.streaming = 0;
			return ENOMEM;
		}
		cam.thread_running = 1;
		LOG("streaming %ux%u@%u%s\n", current_mode()->width, current_mode()->height, cam.rate,
		    cam.dead_mode ? " (dead: no frames will come)" : "");
		return 0;
	}
	default:
		return ENOTTY;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* The intercepted C library functions                                                         */

int ioctl(int fd, unsigned long request, ...)
{
	struct handle *h = handle_of(fd);
	va_list ap;
	void *arg;
	int err;
	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!h)
		return REAL(ioctl)(fd, request, arg);
	if (cfg.debug && request != VIDIOC_QBUF && request != VIDIOC_DQBUF) {
		const char *name = ioctl_name(request);
		if (name)
			LOG("fd %d %s\n", fd, name);
		else
			LOG("fd %d ioctl 0x%lx (unknown: ENOTTY)\n", fd, request);
	}
	if (request == VIDIOC_STREAMOFF) {
		/* joins the frame thread: done without the lock */
		pthread_mutex_lock(&lock);
		err = handle_dead(h) ? ENODEV : *(int *)arg != V4L2_BUF_TYPE_VIDEO_CAPTURE ? EINVAL
			: cam.owner != h ? (cam.owner ? EBUSY : EINVAL) : 0;
		pthread_mutex_unlock(&lock);
		if (!err)
			stream_stop();
	} else {
		pthread_mutex_lock(&lock);
		if (cam.owner && cam.owner != h && !handle_dead(h) && handle_dead(cam.owner)) {
			/* a camera plugged in again is a new device: buffers an fd of before the unplug
			 * still holds are orphaned (its mappings stay valid), never a reason for EBUSY */
			pthread_mutex_unlock(&lock);
			stream_stop();
			pthread_mutex_lock(&lock);
			if (cam.owner && cam.owner != h && handle_dead(cam.owner))
				free_buffers();
		}
		if (request == VIDIOC_REQBUFS && cam.owner == h && cam.streaming && !handle_dead(h) &&
		    ((struct v4l2_requestbuffers *)arg)->count == 0) {
			/* REQBUFS(0) while streaming stops streaming first, as vb2 does */
			pthread_mutex_unlock(&lock);
			stream_stop();
			pthread_mutex_lock(&lock);
		}
		err = do_ioctl(h, request, arg);
		pthread_mutex_unlock(&lock);
	}
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

/* The last application fd of a handle closed: release it as a driver's release() would. */
static void release(struct handle *h)
{
	int owner;
	pthread_mutex_lock(&lock);
	owner = cam.owner == h;
	pthread_mutex_unlock(&lock);
	if (owner) {
		stream_stop();
		pthread_mutex_lock(&lock);
		free_buffers();
		pthread_mutex_unlock(&lock);
	}
	pthread_mutex_lock(&lock);
	for (struct handle **p = &handles; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			break;
		}
	pthread_mutex_unlock(&lock);
	REAL(close)(h->own);
	if (h->peer >= 0)
		REAL(close)(h->peer);
	free(h);
}

/* Forgets fd (lock not held); releases its handle if that was the last fd. */
static void forget(int fd)
{
	struct handle *h;
	int last;
	pthread_mutex_lock(&lock);
	h = fds[fd];
	__atomic_store_n(&fds[fd], NULL, __ATOMIC_RELEASE);
	last = h && --h->refs == 0;
	pthread_mutex_unlock(&lock);
	if (last)
		release(h);
}

int close(int fd)
{
	if (handle_of(fd)) {
		LOG("close fd %d\n", fd);
		forget(fd);
	}
	return REAL(close)(fd);
}

static int remember_dup(int old, int new)
{
	struct handle *h = handle_of(old);
	if (new < 0 || !h)
		return new;
	if (new >= MAX_FDS) {
		REAL(close)(new);
		errno = EMFILE;
		return -1;
	}
	pthread_mutex_lock(&lock);
	h->refs++;
	__atomic_store_n(&fds[new], h, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	LOG("dup fd %d -> %d\n", old, new);
	return new;
}

int dup(int fd) { return remember_dup(fd, REAL(dup)(fd)); }

int dup2(int old, int new)
{
	if (old != new && handle_of(new))
		forget(new);
	return remember_dup(old, REAL(dup2)(old, new));
}

int dup3(int old, int new, int flags)
{
	if (old != new && handle_of(new))
		forget(new);
	return remember_dup(old, REAL(dup3)(old, new, flags));
}

ssize_t read(int fd, void *buf, size_t count)
{
	if (handle_of(fd)) {
		errno = EINVAL; /* no read() I/O, as uvcvideo: frames come through mmap buffers */
		return -1;
	}
	return REAL(read)(fd, buf, count);
}

static void *fake_mmap(void *addr, size_t len, int prot, int flags, int fd, off64_t offset)
{
	struct handle *h = handle_of(fd);
	void *p = MAP_FAILED;
	int err = 0, index;
	pthread_mutex_lock(&lock);
	index = cam.buf_size ? (int)(offset / cam.buf_size) : -1;
	if (handle_dead(h))
		err = ENODEV;
	else if (!(flags & MAP_SHARED) || !cam.nbufs || offset % cam.buf_size || index >= cam.nbufs ||
		 len > cam.buf_size)
		err = EINVAL;
	else if ((p = REAL(mmap)(addr, len, prot, flags, cam.memfd, offset)) == MAP_FAILED)
		err = errno;
	else {
		cam.bufs[index].maps++;
		if (nmaps < MAX_MAPS)
			maps[nmaps++] = (typeof(maps[0])){p, len, index};
	}
	pthread_mutex_unlock(&lock);
	errno = err;
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset)
{
	if (handle_of(fd))
		return fake_mmap(addr, len, prot, flags, fd, offset);
	return REAL(mmap)(addr, len, prot, flags, fd, offset);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t offset)
{
	if (handle_of(fd))
		return fake_mmap(addr, len, prot, flags, fd, offset);
	return REAL(mmap64)(addr, len, prot, flags, fd, offset);
}

int munmap(void *addr, size_t len)
{
	if (__atomic_load_n(&nmaps, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&lock);
		for (int i = 0; i < nmaps; i++) {
			if (maps[i].addr != addr)
				continue;
			if (maps[i].index < cam.nbufs && cam.bufs[maps[i].index].maps)
				cam.bufs[maps[i].index].maps--;
			maps[i] = maps[--nmaps];
			break;
		}
		pthread_mutex_unlock(&lock);
	}
	return REAL(munmap)(addr, len);
}

/* open and its variants: O_CREAT/O_TMPFILE carry a mode argument, passed through as given. */
#define OPEN_MODE(flags, last)                                                                     \
	mode_t mode = 0;                                                                           \
	if ((flags) & (O_CREAT | O_TMPFILE)) {                                                     \
		va_list ap;                                                                        \
		va_start(ap, last);                                                                \
		mode = va_arg(ap, int);                                                            \
		va_end(ap);                                                                        \
	}

int open(const char *path, int flags, ...)
{
	OPEN_MODE(flags, flags);
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(open)(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	OPEN_MODE(flags, flags);
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(open64)(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	OPEN_MODE(flags, flags);
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(openat)(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	OPEN_MODE(flags, flags);
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(openat64)(dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(__open_2)(path, flags);
}

int __open64_2(const char *path, int flags)
{
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(__open64_2)(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(__openat_2)(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	int r = fake_open(path, flags);
	return r != -2 ? r : REAL(__openat64_2)(dirfd, path, flags);
}

/* The stat family, by path (absolute paths only) and by fd. */
int stat(const char *path, struct stat *st)
{
	int r = fake_stat(path, st, 1);
	return r != -2 ? r : REAL(stat)(path, st);
}

int stat64(const char *path, struct stat64 *st)
{
	int r = fake_stat64(path, st, 1);
	return r != -2 ? r : REAL(stat64)(path, st);
}

int lstat(const char *path, struct stat *st)
{
	int r = fake_stat(path, st, 0);
	return r != -2 ? r : REAL(lstat)(path, st);
}

int lstat64(const char *path, struct stat64 *st)
{
	int r = fake_stat64(path, st, 0);
	return r != -2 ? r : REAL(lstat64)(path, st);
}

int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	int r = fake_stat(path, st, !(flags & AT_SYMLINK_NOFOLLOW));
	if (r == -2 && handle_of(dirfd) && (flags & AT_EMPTY_PATH) && !*path)
		return fill_stat(K_CHR, handle_of(dirfd)->node, st);
	return r != -2 ? r : REAL(fstatat)(dirfd, path, st, flags);
}

int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
	int r = fake_stat64(path, st, !(flags & AT_SYMLINK_NOFOLLOW));
	if (r == -2 && handle_of(dirfd) && (flags & AT_EMPTY_PATH) && !*path)
		return fake_stat64(handle_of(dirfd)->node, st, 1);
	return r != -2 ? r : REAL(fstatat64)(dirfd, path, st, flags);
}

int fstat(int fd, struct stat *st)
{
	struct handle *h = handle_of(fd);
	return h ? fill_stat(K_CHR, h->node, st) : REAL(fstat)(fd, st);
}

int fstat64(int fd, struct stat64 *st)
{
	struct handle *h = handle_of(fd);
	if (h) { /* the fd's node may be gone (unplugged): still a character device */
		struct stat s;
		int r = fill_stat(K_CHR, h->node, &s);
		if (!r) {
			memset(st, 0, sizeof *st);
			st->st_dev = s.st_dev;
			st->st_ino = s.st_ino;
			st->st_mode = s.st_mode;
			st->st_nlink = s.st_nlink;
			st->st_rdev = s.st_rdev;
			st->st_blksize = s.st_blksize;
			st->st_atim = s.st_atim;
			st->st_mtim = s.st_mtim;
			st->st_ctim = s.st_ctim;
		}
		return r;
	}
	return REAL(fstat64)(fd, st);
}

/* The versioned entry points programs built against glibc < 2.33 call. */
int __xstat(int ver, const char *path, struct stat *st)
{
	int r = fake_stat(path, st, 1);
	return r != -2 ? r : REAL(__xstat)(ver, path, st);
}

int __xstat64(int ver, const char *path, struct stat64 *st)
{
	int r = fake_stat64(path, st, 1);
	return r != -2 ? r : REAL(__xstat64)(ver, path, st);
}

int __lxstat(int ver, const char *path, struct stat *st)
{
	int r = fake_stat(path, st, 0);
	return r != -2 ? r : REAL(__lxstat)(ver, path, st);
}

int __lxstat64(int ver, const char *path, struct stat64 *st)
{
	int r = fake_stat64(path, st, 0);
	return r != -2 ? r : REAL(__lxstat64)(ver, path, st);
}

int __fxstat(int ver, int fd, struct stat *st)
{
	struct handle *h = handle_of(fd);
	return h ? fill_stat(K_CHR, h->node, st) : REAL(__fxstat)(ver, fd, st);
}

int __fxstat64(int ver, int fd, struct stat64 *st)
{
	return handle_of(fd) ? fstat64(fd, st) : REAL(__fxstat64)(ver, fd, st);
}

int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
	int r = fake_stat(path, st, !(flags & AT_SYMLINK_NOFOLLOW));
	return r != -2 ? r : REAL(__fxstatat)(ver, dirfd, path, st, flags);
}

int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
	int r = fake_stat64(path, st, !(flags & AT_SYMLINK_NOFOLLOW));
	return r != -2 ? r : REAL(__fxstatat64)(ver, dirfd, path, st, flags);
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *stx)
{
	struct stat st;
	struct handle *h = handle_of(dirfd);
	int r;
	if ((flags & AT_EMPTY_PATH) && !*path && h)
		r = fill_stat(K_CHR, h->node, &st);
	else
		r = fake_stat(path, &st, !(flags & AT_SYMLINK_NOFOLLOW));
	if (r == -2)
		return REAL(statx)(dirfd, path, flags, mask, stx);
	if (r)
		return r;
	memset(stx, 0, sizeof *stx);
	stx->stx_mask = STATX_BASIC_STATS;
	stx->stx_blksize = st.st_blksize;
	stx->stx_nlink = st.st_nlink;
	stx->stx_mode = st.st_mode;
	stx->stx_ino = st.st_ino;
	stx->stx_size = st.st_size;
	stx->stx_rdev_major = major(st.st_rdev);
	stx->stx_rdev_minor = minor(st.st_rdev);
	stx->stx_dev_major = major(st.st_dev);
	stx->stx_dev_minor = minor(st.st_dev);
	stx->stx_atime.tv_sec = st.st_atim.tv_sec;
	stx->stx_mtime.tv_sec = st.st_mtim.tv_sec;
	stx->stx_ctime.tv_sec = st.st_ctim.tv_sec;
	return 0;
}

static int fake_access(const char *path)
{
	struct stat st;
	return fake_stat(path, &st, 1);
}

int access(const char *path, int how)
{
	int r = fake_access(path);
	return r != -2 ? r : REAL(access)(path, how);
}

int euidaccess(const char *path, int how)
{
	int r = fake_access(path);
	return r != -2 ? r : REAL(euidaccess)(path, how);
}

int faccessat(int dirfd, const char *path, int how, int flags)
{
	int r = fake_access(path);
	return r != -2 ? r : REAL(faccessat)(dirfd, path, how, flags);
}

/* A link's target is the camera's current node (absolute, where udev writes ../../videoN). */
static ssize_t fake_readlink(const char *path, char *buf, size_t size)
{
	char node[PATH_MAX];
	enum kind kind = classify(path, node);
	size_t n;
	if (kind == K_NONE)
		return -2;
	if (kind != K_LINK) {
		errno = kind == K_ABSENT ? ENOENT : EINVAL;
		return -1;
	}
	n = strlen(node) < size ? strlen(node) : size;
	memcpy(buf, node, n);
	return n;
}

ssize_t readlink(const char *path, char *buf, size_t size)
{
	ssize_t r = fake_readlink(path, buf, size);
	return r != -2 ? r : REAL(readlink)(path, buf, size);
}

ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size)
{
	ssize_t r = fake_readlink(path, buf, size);
	return r != -2 ? r : REAL(readlinkat)(dirfd, path, buf, size);
}
