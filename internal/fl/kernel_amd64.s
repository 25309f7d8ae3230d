#include "textflag.h"

// The AVX2 + FMA kernels (kernel_amd64.go). Each handles n floats, n a
// multiple of 32: four 8-float registers per iteration, which keeps enough
// loads in flight for the pass to run at memory speed. Loads and stores
// are unaligned (a pool payload is 4-byte aligned, no more is promised).

// func foldAVX2(acc, u *float32, n int, w float32) int
//
// acc[i] += w*u[i], 32 floats at a time; before a group of 32 is stored,
// its results are checked: a result whose exponent bits are all ones (NaN,
// ±Inf: a non-finite input or an overflow) stops the pass there, unstored,
// and the group's start is returned. -1 when all were stored.
TEXT ·foldAVX2(SB), NOSPLIT, $0-40
	MOVQ acc+0(FP), DI
	MOVQ u+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS w+24(FP), Y0
	MOVL $0x7f800000, R8
	MOVQ R8, X15
	VPBROADCASTD X15, Y15
	XORQ AX, AX

foldloop:
	CMPQ AX, CX
	JGE  folddone
	VMOVUPS (DI)(AX*4), Y1
	VMOVUPS 32(DI)(AX*4), Y2
	VMOVUPS 64(DI)(AX*4), Y3
	VMOVUPS 96(DI)(AX*4), Y4
	VFMADD231PS (SI)(AX*4), Y0, Y1
	VFMADD231PS 32(SI)(AX*4), Y0, Y2
	VFMADD231PS 64(SI)(AX*4), Y0, Y3
	VFMADD231PS 96(SI)(AX*4), Y0, Y4
	VPAND    Y15, Y1, Y5
	VPCMPEQD Y15, Y5, Y5
	VPAND    Y15, Y2, Y6
	VPCMPEQD Y15, Y6, Y6
	VPAND    Y15, Y3, Y7
	VPCMPEQD Y15, Y7, Y7
	VPAND    Y15, Y4, Y8
	VPCMPEQD Y15, Y8, Y8
	VPOR     Y5, Y6, Y5
	VPOR     Y7, Y8, Y7
	VPOR     Y5, Y7, Y5
	VPTEST   Y5, Y5
	JNZ      foldbad
	VMOVUPS Y1, (DI)(AX*4)
	VMOVUPS Y2, 32(DI)(AX*4)
	VMOVUPS Y3, 64(DI)(AX*4)
	VMOVUPS Y4, 96(DI)(AX*4)
	ADDQ $32, AX
	JMP  foldloop

foldbad:
	MOVQ AX, ret+32(FP)
	VZEROUPPER
	RET

folddone:
	MOVQ $-1, ret+32(FP)
	VZEROUPPER
	RET

// func storeAVX2(dst, u *float32, n int, w float32) int
//
// dst[i] = w*u[i], checked like foldAVX2 (dst is not read).
TEXT ·storeAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ u+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS w+24(FP), Y0
	MOVL $0x7f800000, R8
	MOVQ R8, X15
	VPBROADCASTD X15, Y15
	XORQ AX, AX

storeloop:
	CMPQ AX, CX
	JGE  storedone
	VMULPS (SI)(AX*4), Y0, Y1
	VMULPS 32(SI)(AX*4), Y0, Y2
	VMULPS 64(SI)(AX*4), Y0, Y3
	VMULPS 96(SI)(AX*4), Y0, Y4
	VPAND    Y15, Y1, Y5
	VPCMPEQD Y15, Y5, Y5
	VPAND    Y15, Y2, Y6
	VPCMPEQD Y15, Y6, Y6
	VPAND    Y15, Y3, Y7
	VPCMPEQD Y15, Y7, Y7
	VPAND    Y15, Y4, Y8
	VPCMPEQD Y15, Y8, Y8
	VPOR     Y5, Y6, Y5
	VPOR     Y7, Y8, Y7
	VPOR     Y5, Y7, Y5
	VPTEST   Y5, Y5
	JNZ      storebad
	VMOVUPS Y1, (DI)(AX*4)
	VMOVUPS Y2, 32(DI)(AX*4)
	VMOVUPS Y3, 64(DI)(AX*4)
	VMOVUPS Y4, 96(DI)(AX*4)
	ADDQ $32, AX
	JMP  storeloop

storebad:
	MOVQ AX, ret+32(FP)
	VZEROUPPER
	RET

storedone:
	MOVQ $-1, ret+32(FP)
	VZEROUPPER
	RET

// func add2ScaleAVX2(dst, a, b *float32, n int, s float32)
//
// dst[i] = (a[i] + b[i]) * s.
TEXT ·add2ScaleAVX2(SB), NOSPLIT, $0-36
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS s+32(FP), Y0
	XORQ AX, AX

addloop:
	CMPQ AX, CX
	JGE  adddone
	VMOVUPS (SI)(AX*4), Y1
	VMOVUPS 32(SI)(AX*4), Y2
	VMOVUPS 64(SI)(AX*4), Y3
	VMOVUPS 96(SI)(AX*4), Y4
	VADDPS (DX)(AX*4), Y1, Y1
	VADDPS 32(DX)(AX*4), Y2, Y2
	VADDPS 64(DX)(AX*4), Y3, Y3
	VADDPS 96(DX)(AX*4), Y4, Y4
	VMULPS Y0, Y1, Y1
	VMULPS Y0, Y2, Y2
	VMULPS Y0, Y3, Y3
	VMULPS Y0, Y4, Y4
	VMOVUPS Y1, (DI)(AX*4)
	VMOVUPS Y2, 32(DI)(AX*4)
	VMOVUPS Y3, 64(DI)(AX*4)
	VMOVUPS Y4, 96(DI)(AX*4)
	ADDQ $32, AX
	JMP  addloop

adddone:
	VZEROUPPER
	RET
