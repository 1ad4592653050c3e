package shm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// requiredSeals are the seals a shared region must carry before it is
// mapped: without them the other process could shrink the file under our
// mapping and make us fault.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// createMemfd creates a sealed memfd of size bytes and maps it.
func createMemfd(name string, size uint64, populate bool) (int, []byte, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		_ = unix.Close(fd)
		return -1, nil, fmt.Errorf("size memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		_ = unix.Close(fd)
		return -1, nil, fmt.Errorf("seal memfd: %w", err)
	}
	mem, err := mapShared(fd, size, populate)
	if err != nil {
		_ = unix.Close(fd)
		return -1, nil, err
	}
	return fd, mem, nil
}

// mapPeerMemfd checks a memfd received from the peer (its size must be
// size, it must be sealed) and maps it.
func mapPeerMemfd(fd int, size uint64, populate bool) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: stat the peer's memfd: %w", rdma.ErrProtocol, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(size) {
		return nil, fmt.Errorf("%w: the peer's memfd has %d bytes (mode %#o), want %d", rdma.ErrProtocol, st.Size, st.Mode, size)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: the peer's region is not a memfd: %w", rdma.ErrProtocol, err)
	}
	if seals&requiredSeals != requiredSeals || seals&unix.F_SEAL_WRITE != 0 {
		return nil, fmt.Errorf("%w: the peer's memfd is sealed %#x, want %#x and writable", rdma.ErrProtocol, seals, requiredSeals)
	}
	mem, err := mapShared(fd, size, populate)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", rdma.ErrProtocol, err)
	}
	return mem, nil
}

func mapShared(fd int, size uint64, populate bool) ([]byte, error) {
	flags := unix.MAP_SHARED
	if populate {
		flags |= unix.MAP_POPULATE
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return mem, nil
}
