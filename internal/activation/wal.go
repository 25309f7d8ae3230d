package activation

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The write-ahead log in front of the store's bbolt files. A write that
// must be durable (an accepted activation, an attempt's start, an
// outcome) is appended here, and every write waiting at that moment rides
// one fdatasync: the accept path pays one disk flush per group, not
// bbolt's two plus its page writes. The log's records are applied to the
// bbolt files in the background; a segment whose every record is applied
// is deleted. After a crash, Open replays what the files had not applied.
//
// The log is a directory of segments, files named by a growing index
// (%016x.wal), each written full of zeros before it is used (Postgres's
// habit): the fdatasync of an append then flushes only the data, never
// the file's size or an extent's conversion, which would wait for the
// file system's journal commit, with whatever else the machine had
// changed (a preallocated file's flushes measured here: p99 ~100 ms under
// load, against ~4 ms for a zeroed one). The first segments a node makes
// are small (1 MiB, doubling up to walSegment) so that opening a store
// costs little. A segment is a run of frames:
//
//	crc32c u32 | len u32 | seq u64 | payload (len bytes)
//
// little-endian, the checksum over len, seq and the payload. Sequence
// numbers grow by one from frame to frame, across segments. A segment
// ends with a roll frame naming the next segment, written and flushed
// with the first frames of that next segment; a segment is made, sized
// and flushed (with its directory) before any frame goes into it.
//
// Reading stops at the first frame that is not whole and right: a zero
// header (the preallocated rest), a checksum that does not match (a torn
// write: the frame's pages reached the disk only in part), a length past
// the file, a sequence number that does not follow, a segment that ends
// without a roll frame. Nothing past that point was acknowledged — a
// group is acknowledged only once its whole write is flushed — so the log
// is cut there: the rest of that segment is zeroed (so that stale frames
// of the cut-off write cannot line up with later ones) and later segments
// are removed.

// walSegment is a segment's size (a variable for tests), firstSegment
// the size of the first one a log makes. A frame larger than a segment
// gets a segment of its own, grown as written.
var walSegment int64 = 16 << 20

const firstSegment = 1 << 20

const (
	frameHeader = 16
	walExt      = ".wal"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errWALFailed wraps the error that stopped the log: after a failed write
// or flush nothing that follows can be trusted to be durable (the page
// cache may have dropped the failed pages), so the store refuses writes
// until it is opened again.
var errWALFailed = errors.New("activation: write-ahead log failed")

// segment is one file of the log.
type segment struct {
	idx  uint64
	size int64 // its room
	f    *os.File
	pos  int64  // where the next frame goes
	last uint64 // the last sequence number in it (0: none)
}

// wal is the log. Only the store's writer goroutine appends; the applier
// retires segments (segMu guards the list of full ones).
type wal struct {
	dir     string
	cur     *segment
	spare   chan spareSeg // the next segment, made ahead of need
	making  bool          // a segment is being made for spare, or waits in it
	frames  []frame       // the frames of the group not yet written, for the current segment
	pending int64         // their bytes
	iov     [][]byte
	syncNs  atomic.Int64 // time in fdatasync
	seq     uint64       // the last sequence number written
	dirty   []*segment   // segments written since the last flush
	made    int          // segments made so far (they grow to walSegment)

	segMu sync.Mutex
	full  []*segment // segments rolled over, oldest first (closed files: idx, last)
	free  []uint64   // retired segments to reuse
}

// frame is a frame waiting to be written: its header, and its payload
// (the op's own bytes, written from where they are).
type frame struct {
	hdr     [frameHeader]byte
	payload []byte
}

type spareSeg struct {
	s   *segment
	err error
}

func segName(dir string, idx uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x%s", idx, walExt))
}

// listSegments returns the segment indexes in dir, in order.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), walExt)
		if !ok || len(name) != 16 {
			continue
		}
		idx, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		out = append(out, idx)
	}
	slices.Sort(out)
	return out, nil
}

// syncDir flushes dir itself: a file created, renamed or removed in it is
// durable only then.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// createSegment makes segment idx of size bytes: created, written full
// of zeros, flushed, and its directory entry flushed.
func createSegment(dir string, idx uint64, size int64) (*segment, error) {
	f, err := os.OpenFile(segName(dir, idx), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zeros := make([]byte, min(size, 1<<20))
	for at := int64(0); at < size; at += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-at)], at); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &segment{idx: idx, f: f, size: size}, nil
}

// walRecord is a frame read back by replay.
type walRecord struct {
	seq     uint64
	payload []byte // valid while the replay callback runs, and after (the segment's bytes are not reused)
}

// Frame payload kinds of the log itself (the store's kinds are below 0x80).
const kindRoll = 0x80

// openWAL opens (or creates) the log in dir and calls fn with every record
// it holds, in order. Then it ends the log where it stops being whole
// with a roll frame (flushed) to a new segment, where appending goes on:
// whatever a crash left past that point is never read again. It returns
// the last sequence number read (0: none). floor is the highest sequence
// number the caller has applied: an empty log goes on after it.
func openWAL(dir string, floor uint64, fn func(walRecord) error) (*wal, uint64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	idxs, err := listSegments(dir)
	if err != nil {
		return nil, 0, err
	}
	// Segments are retired oldest first once applied: after a gap (a
	// rename that reached the disk after a later one did) only what
	// follows the last gap can hold unapplied records.
	for i := len(idxs) - 1; i > 0; i-- {
		if idxs[i] != idxs[i-1]+1 {
			idxs = idxs[i:]
			break
		}
	}
	w := &wal{dir: dir, spare: make(chan spareSeg, 1)}
	if w.free, err = listFree(dir); err != nil {
		return nil, 0, err
	}
	var last uint64
	end := segment{idx: 1}
	if len(idxs) > 0 {
		end.idx = idxs[0]
	}
	for i, idx := range idxs {
		data, err := os.ReadFile(segName(dir, idx))
		if err != nil {
			return nil, 0, err
		}
		at, seq, next, err := readFrames(data, last, fn)
		if err != nil {
			return nil, 0, err
		}
		if next != 0 && (i+1 == len(idxs) || idxs[i+1] != next) {
			// A roll frame whose segment is missing (never made by
			// this log, but be safe): the log ends before it.
			next, seq = 0, seq-1
		}
		if seq != 0 {
			last = seq
		}
		if next == 0 {
			end.idx, end.pos = idx, at
			break
		}
		w.full = append(w.full, &segment{idx: idx, last: seq})
	}
	// Later segments hold nothing that was acknowledged.
	for _, idx := range idxs {
		if idx > end.idx {
			if err := os.Remove(segName(dir, idx)); err != nil {
				return nil, 0, err
			}
		}
	}
	w.seq = last
	if last == 0 {
		w.seq = floor
	}
	// End the log here: a roll frame after the last whole frame, to a
	// fresh segment.
	f, err := os.OpenFile(segName(dir, end.idx), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	end.f = f
	if fi, err := f.Stat(); err == nil {
		end.size = fi.Size()
	}
	w.cur = &end
	w.prepare(end.idx + 1)
	if err := w.roll(); err != nil {
		w.cur.f.Close()
		return nil, 0, err
	}
	if err := w.sync(); err != nil {
		w.cur.f.Close()
		return nil, 0, err
	}
	return w, last, nil
}

// readFrames reads the frames of one segment, calling fn with each record
// (roll frames excepted). prev is the sequence number before the
// segment's first frame (0: any). It returns where the whole frames end
// (before a roll frame, at the roll frame's own offset), the last
// sequence number read (a roll frame's included), and the next segment's
// index when the segment ends with a roll frame (0 otherwise).
func readFrames(data []byte, prev uint64, fn func(walRecord) error) (end int64, last uint64, next uint64, err error) {
	pos := 0
	for {
		if len(data)-pos < frameHeader {
			return int64(pos), last, 0, nil
		}
		h := data[pos:]
		sum := binary.LittleEndian.Uint32(h[0:])
		n := int(binary.LittleEndian.Uint32(h[4:]))
		seq := binary.LittleEndian.Uint64(h[8:])
		if n == 0 || n > len(data)-pos-frameHeader {
			return int64(pos), last, 0, nil
		}
		if crc32.Checksum(h[4:frameHeader+n], crcTable) != sum {
			return int64(pos), last, 0, nil // torn
		}
		if prev != 0 && seq != prev+1 {
			return int64(pos), last, 0, nil // stale: an older use of the file
		}
		payload := h[frameHeader : frameHeader+n]
		if payload[0] == kindRoll {
			if len(payload) != 9 {
				return int64(pos), last, 0, nil
			}
			// A roll frame's sequence number counts: the next segment's
			// first frame follows it.
			return int64(pos), seq, binary.LittleEndian.Uint64(payload[1:]), nil
		}
		if err := fn(walRecord{seq: seq, payload: payload}); err != nil {
			return 0, 0, 0, err
		}
		prev, last = seq, seq
		pos += frameHeader + n
	}
}

// Retired segments are renamed NNNN.free and made into new segments
// (Postgres's habit: their blocks are written already, so the flush of a
// frame written into one does not also journal the file's allocation).
const (
	freeExt = ".free"
	maxFree = 2
)

func freeName(dir string, idx uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x%s", idx, freeExt))
}

func listFree(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), freeExt)
		if !ok || len(name) != 16 {
			continue
		}
		if idx, err := strconv.ParseUint(name, 16, 64); err == nil {
			out = append(out, idx)
		}
	}
	return out, nil
}

// prepare makes segment idx in the background: a retired one renamed, or
// a new one. The next segment is made once the current one has its first
// frame (an idle log makes no files).
func (w *wal) prepare(idx uint64) {
	w.making = true
	w.segMu.Lock()
	reuse, ok := uint64(0), false
	if n := len(w.free); n > 0 {
		reuse, w.free, ok = w.free[n-1], w.free[:n-1], true
	}
	w.segMu.Unlock()
	size := min(walSegment, firstSegment<<min(w.made, 16))
	w.made++
	go func() {
		if ok {
			s, err := reuseSegment(w.dir, reuse, idx)
			if err == nil {
				w.spare <- spareSeg{s, nil}
				return
			}
		}
		s, err := createSegment(w.dir, idx, size)
		w.spare <- spareSeg{s, err}
	}()
}

// reuseSegment renames retired segment old to segment idx.
func reuseSegment(dir string, old, idx uint64) (*segment, error) {
	if err := os.Rename(freeName(dir, old), segName(dir, idx)); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(segName(dir, idx), os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &segment{idx: idx, f: f, size: fi.Size()}, nil
}

// frame adds a frame of payload (the next sequence number) to the group
// being written, first rolling over to the next segment when the frame
// does not fit in this one's room. It returns the frame's sequence
// number. payload must not change until the group is synced.
func (w *wal) frame(payload []byte) (uint64, error) {
	size := int64(frameHeader + len(payload))
	if !w.making {
		w.prepare(w.cur.idx + 1)
	}
	used := w.cur.pos + w.pending
	if used > 0 && used+size+frameHeader+9 > w.cur.size {
		if err := w.roll(); err != nil {
			return 0, err
		}
	}
	w.seq++
	w.add(w.seq, payload)
	return w.seq, nil
}

func (w *wal) add(seq uint64, payload []byte) {
	w.frames = append(w.frames, frame{payload: payload})
	f := &w.frames[len(w.frames)-1]
	binary.LittleEndian.PutUint32(f.hdr[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(f.hdr[8:], seq)
	sum := crc32.Update(0, crcTable, f.hdr[4:])
	binary.LittleEndian.PutUint32(f.hdr[0:], crc32.Update(sum, crcTable, payload))
	w.pending += int64(frameHeader + len(payload))
}

// roll ends the current segment with a roll frame naming the next (its
// frames are written now, flushed with the group) and moves on to it.
func (w *wal) roll() error {
	if !w.making {
		w.prepare(w.cur.idx + 1)
	}
	sp := <-w.spare
	w.making = false
	if sp.err != nil {
		return fmt.Errorf("new segment: %w", sp.err) // tried again by the next frame
	}
	w.seq++
	p := make([]byte, 9)
	p[0] = kindRoll
	binary.LittleEndian.PutUint64(p[1:], sp.s.idx)
	w.add(w.seq, p)
	if err := w.write(); err != nil {
		return err
	}
	w.segMu.Lock()
	w.full = append(w.full, w.cur)
	w.segMu.Unlock()
	w.cur = sp.s
	return nil
}

// write writes the frames gathered for the current segment, from where
// their bytes are (pwritev), not yet flushed to the disk: sync does that.
func (w *wal) write() error {
	if len(w.frames) == 0 {
		return nil
	}
	const iovMax = 1024
	at := w.cur.pos
	for i := 0; i < len(w.frames); {
		iov := w.iov[:0]
		for ; i < len(w.frames) && len(iov) < iovMax; i++ {
			iov = append(iov, w.frames[i].hdr[:], w.frames[i].payload)
		}
		w.iov = iov
		for len(iov) > 0 {
			n, err := unix.Pwritev(int(w.cur.f.Fd()), iov, at)
			if err != nil {
				return fmt.Errorf("write %s: %w", w.cur.f.Name(), err)
			}
			at += int64(n)
			for len(iov) > 0 && n >= len(iov[0]) {
				n -= len(iov[0])
				iov = iov[1:]
			}
			if n > 0 {
				iov[0] = iov[0][n:]
			}
		}
	}
	w.cur.pos = at
	w.cur.last = w.seq
	clear(w.frames)
	w.frames, w.pending = w.frames[:0], 0
	clear(w.iov)
	if len(w.dirty) == 0 || w.dirty[len(w.dirty)-1] != w.cur {
		w.dirty = append(w.dirty, w.cur)
	}
	return nil
}

// sync writes the group's frames and flushes every segment they went
// into: once it returns nil, the group is durable.
func (w *wal) sync() error {
	if err := w.write(); err != nil {
		return err
	}
	began := time.Now()
	for _, s := range w.dirty {
		if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
			return err
		}
	}
	w.syncNs.Add(int64(time.Since(began)))
	for _, s := range w.dirty {
		if s != w.cur {
			s.f.Close() // a segment rolled over: never written again
		}
	}
	clear(w.dirty)
	w.dirty = w.dirty[:0]
	return nil
}

// retire retires the full segments whose every record is applied (seq at
// most applied), oldest first: kept for reuse (up to maxFree) or removed.
func (w *wal) retire(applied uint64) error {
	w.segMu.Lock()
	// A full segment's last frame is its roll frame, flushed with the
	// group that went on in the next segment: once a record after it is
	// applied, the segment is flushed, closed and wholly applied.
	n := 0
	for n < len(w.full) && w.full[n].last <= applied {
		n++
	}
	gone := slices.Clone(w.full[:n])
	w.full = slices.Delete(w.full, 0, n)
	w.segMu.Unlock()
	if n == 0 {
		return nil
	}
	for _, s := range gone {
		w.segMu.Lock()
		keep := len(w.free) < maxFree
		w.segMu.Unlock()
		var err error
		if keep {
			err = os.Rename(segName(w.dir, s.idx), freeName(w.dir, s.idx))
		} else {
			err = os.Remove(segName(w.dir, s.idx))
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if keep {
			w.segMu.Lock()
			w.free = append(w.free, s.idx)
			w.segMu.Unlock()
		}
	}
	return syncDir(w.dir)
}

// close closes the log's files (the segment made ahead is left: it holds
// nothing, and the next open removes it).
func (w *wal) close() error {
	err := w.cur.f.Close()
	if w.making {
		if sp := <-w.spare; sp.s != nil {
			sp.s.f.Close()
		}
	}
	return err
}

// segments returns how many segment files the log has (for tests).
func (w *wal) segments() int {
	w.segMu.Lock()
	defer w.segMu.Unlock()
	return len(w.full) + 1
}
