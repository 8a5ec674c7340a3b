package daemon

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's file format, as far as precheck reads it (go.etcd.io/bbolt
// internal/common: page.go, meta.go; little-endian on every platform
// encwatch is built for).
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16 // id uint64, flags uint16, count uint16, overflow uint32
	metaSize         = 56 // magic, version, pageSize, flags, root{pgid, sequence}, freelist, pgid, txid; then checksum
	freelistPageFlag = 0x10
	noFreelist       = ^uint64(0)
)

// precheck reads a state file's meta pages and checks what bbolt trusts
// when it opens a file, before bbolt maps it: a damaged freelist makes
// bbolt panic inside Open with the file mapped and locked, and pages that
// a truncated file no longer holds would fault when read. It returns nil
// for a file bbolt can open safely, or for one it will refuse by itself
// (both meta pages invalid).
func precheck(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt reports it, or creates the file
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return nil
	}
	size := st.Size()
	var best *boltMeta
	for _, off := range []int64{0, -1} {
		m, ok := readMeta(f, off, best)
		if ok && (best == nil || m.txid > best.txid) {
			best = &m
		}
	}
	if best == nil {
		return nil // bbolt refuses it with ErrInvalid, cleanly
	}
	ps := int64(best.pageSize)
	if best.pgid > uint64(size/ps) {
		return fmt.Errorf("the file holds %d bytes but its meta page names %d pages of %d bytes: it was cut short", size, best.pgid, ps)
	}
	if best.root >= best.pgid {
		return fmt.Errorf("the root table's page %d lies past the last page %d", best.root, best.pgid)
	}
	if best.freelist != noFreelist {
		if best.freelist >= best.pgid {
			return fmt.Errorf("the freelist page %d lies past the last page %d", best.freelist, best.pgid)
		}
		var hdr [pageHeaderSize]byte
		if _, err := f.ReadAt(hdr[:], int64(best.freelist)*ps); err != nil {
			return fmt.Errorf("reading the freelist page: %w", err)
		}
		if flags := binary.LittleEndian.Uint16(hdr[8:10]); flags != freelistPageFlag {
			return fmt.Errorf("page %d should hold the freelist but is of type %#x", best.freelist, flags)
		}
	}
	return nil
}

type boltMeta struct {
	pageSize             uint32
	root, freelist, pgid uint64
	txid                 uint64
}

// readMeta reads the meta page at page 0 (off 0) or page 1 (off -1: at the
// page size the first valid meta gives, else 4096) and validates it as
// bbolt does: magic, version, checksum.
func readMeta(f io.ReaderAt, off int64, first *boltMeta) (boltMeta, bool) {
	if off < 0 {
		off = 4096
		if first != nil {
			off = int64(first.pageSize)
		}
	}
	buf := make([]byte, pageHeaderSize+metaSize+8)
	if _, err := f.ReadAt(buf, off); err != nil {
		return boltMeta{}, false
	}
	b := buf[pageHeaderSize:]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(b[:metaSize])
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion || le.Uint64(b[metaSize:]) != h.Sum64() {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	if m.pageSize < 512 || m.pageSize > 1<<16 {
		return boltMeta{}, false
	}
	return m, true
}
