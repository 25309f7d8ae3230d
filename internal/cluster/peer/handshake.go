package peer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The handshake opens every link. Each side writes its hello:
//
//	"SPRYPEER" | u16 version | u16 flags | u8 nameLen | name | 16-byte nonce
//
// and reads the other's. flags bit 0 says the side holds a cluster token
// (HubConfig.Token): both must agree. With a token, each side then writes
// proof = HMAC-SHA256(token, role | its nonce | the other's nonce | its
// name), role "dial" or "accept", and checks the other's: a node that does
// not know the token cannot join, and a proof cannot be replayed (the
// nonces are fresh) or reflected (the roles differ). Without a token the
// accepting side takes links only from the nodes its cluster map names,
// at their addresses.
//
// Last, the accepting side writes its verdict, one byte: 1 the link is
// taken, 0 refused (the dialing node is not in its cluster map yet, or not
// at its address). The dialing side puts nothing on a link before it has
// read a 1, so no request is ever sent on a link about to be closed.

const (
	magic        = "SPRYPEER"
	version      = 3 // 3: requests carry their place in a graph (frame.go, the graph part)
	flagToken    = 1
	nonceSize    = 16
	handshakeMax = 5 * time.Second
)

// ErrHandshake is a link that failed its handshake.
var ErrHandshake = errors.New("peer: handshake failed")

type hello struct {
	name  string
	flags uint16
	nonce [nonceSize]byte
}

func (h *hello) write(w io.Writer) error {
	b := make([]byte, 0, len(magic)+5+len(h.name)+nonceSize)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint16(b, version)
	b = binary.LittleEndian.AppendUint16(b, h.flags)
	b = append(b, byte(len(h.name)))
	b = append(b, h.name...)
	b = append(b, h.nonce[:]...)
	_, err := w.Write(b)
	return err
}

func readHello(r io.Reader) (hello, error) {
	var h hello
	b := make([]byte, len(magic)+5)
	if _, err := io.ReadFull(r, b); err != nil {
		return h, err
	}
	if string(b[:len(magic)]) != magic {
		return h, fmt.Errorf("%w: not a Spry node", ErrHandshake)
	}
	if v := binary.LittleEndian.Uint16(b[len(magic):]); v != version {
		return h, fmt.Errorf("%w: protocol version %d, this node speaks %d", ErrHandshake, v, version)
	}
	h.flags = binary.LittleEndian.Uint16(b[len(magic)+2:])
	name := make([]byte, int(b[len(magic)+4])+nonceSize)
	if _, err := io.ReadFull(r, name); err != nil {
		return h, err
	}
	h.name = string(name[:len(name)-nonceSize])
	copy(h.nonce[:], name[len(name)-nonceSize:])
	if h.name == "" {
		return h, fmt.Errorf("%w: no node name", ErrHandshake)
	}
	return h, nil
}

func proof(token []byte, role string, own, other *hello) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(role))
	m.Write(own.nonce[:])
	m.Write(other.nonce[:])
	m.Write([]byte(own.name))
	return m.Sum(nil)
}

// handshake runs the handshake on nc as this node (self) and returns the
// other side's name. dial says which side this is.
func handshake(nc net.Conn, self string, token []byte, dial bool) (string, error) {
	nc.SetDeadline(time.Now().Add(handshakeMax))
	defer nc.SetDeadline(time.Time{})
	own := hello{name: self}
	if len(token) > 0 {
		own.flags |= flagToken
	}
	if _, err := rand.Read(own.nonce[:]); err != nil {
		return "", err
	}
	if err := own.write(nc); err != nil {
		return "", err
	}
	other, err := readHello(nc)
	if err != nil {
		return "", err
	}
	if other.flags&flagToken != own.flags&flagToken {
		if len(token) > 0 {
			return other.name, fmt.Errorf("%w: node %s has no cluster token (--peer-token-file)", ErrHandshake, other.name)
		}
		return other.name, fmt.Errorf("%w: node %s wants a cluster token and this node has none (--peer-token-file)", ErrHandshake, other.name)
	}
	if len(token) == 0 {
		return other.name, nil
	}
	role, otherRole := "accept", "dial"
	if dial {
		role, otherRole = otherRole, role
	}
	if _, err := nc.Write(proof(token, role, &own, &other)); err != nil {
		return other.name, err
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(nc, got); err != nil {
		return other.name, err
	}
	if !hmac.Equal(got, proof(token, otherRole, &other, &own)) {
		return other.name, fmt.Errorf("%w: node %s does not know this cluster's token", ErrHandshake, other.name)
	}
	return other.name, nil
}

// Verdicts the accepting side writes after the handshake.
const (
	verdictRefused  = 0
	verdictAccepted = 1
)

// writeVerdict ends the handshake on the accepting side.
func writeVerdict(nc net.Conn, ok bool) error {
	nc.SetWriteDeadline(time.Now().Add(handshakeMax))
	defer nc.SetWriteDeadline(time.Time{})
	v := byte(verdictRefused)
	if ok {
		v = verdictAccepted
	}
	_, err := nc.Write([]byte{v})
	return err
}

// readVerdict ends the handshake on the dialing side.
func readVerdict(nc net.Conn, name string) error {
	nc.SetReadDeadline(time.Now().Add(handshakeMax))
	defer nc.SetReadDeadline(time.Time{})
	var b [1]byte
	if _, err := io.ReadFull(nc, b[:]); err != nil {
		return fmt.Errorf("%w: node %s closed the link (it does not know this node yet?): %w", ErrHandshake, name, err)
	}
	if b[0] != verdictAccepted {
		return fmt.Errorf("%w: node %s refused the link (this node is not in its cluster map yet, or not at its address)", ErrHandshake, name)
	}
	return nil
}
