# One GRU step (ONNX/PyTorch form, linear_before_reset = 1) on `tiny`, hidden = input = 8:
#   z, r = sigm(Wz x + Uz h + bz), sigm(Wr x + Ur h + br)
#   n    = tanh(Wn x + bn + r * (Un h + bhn))
#   h'   = n + z * (h - n)
# Memory map: IVRF[0] = x, IVRF[1] = h (so [x; h] is contiguous).
# MRF: tiles 0..3 = [Wz Uz; Wr Ur] (2 x 2), tile 4 = Un, tile 5 = Wn.
# ASVRF0: 0..1 = [bz; br], 2 = bhn, 3 = bn, 4 = n.   ASVRF1: 0 = r*(Un h + bhn), 1 = n.
# MULVRF0: 0 = z, 1 = r.

s_wr rows 2
s_wr cols 2
v_rd ivrf 0              # [x; h]
mv_mul 0                 # [Wz Uz; Wr Ur] [x; h]
vv_add 0                 # + [bz; br]
v_sigm mfu=0
v_wr mulvrf 0            # z, r -> MULVRF0[0..1]
end_chain

s_wr rows 1
s_wr cols 1
v_rd ivrf 1              # h
mv_mul 4                 # Un h
vv_add 2                 # + bhn
vv_mul 1                 # * r        (MFU 0 multiply stage)
v_wr asvrf 0 mfu=1       # -> ASVRF1[0]
end_chain

v_rd ivrf 0              # x
mv_mul 5                 # Wn x
vv_add 3                 # + bn       (MFU 0)
vv_add 0 mfu=1           # + r*(Un h + bhn) (MFU 1)
v_tanh mfu=1
v_wr asvrf 4             # n -> ASVRF0[4]
v_wr asvrf 1 mfu=1       # n -> ASVRF1[1]
end_chain

v_rd ivrf 1              # h
vv_a_sub_b 4             # h - n      (MFU 0 add/sub)
vv_mul 0                 # * z        (MFU 0 multiply)
vv_add 1 mfu=1           # + n        (MFU 1 add/sub)
v_wr ivrf 1              # h' replaces h for the next step
v_wr netq 0
end_chain
