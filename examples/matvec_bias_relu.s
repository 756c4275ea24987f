# y = relu(W x + b) on the `tiny` configuration (native dimension 8).
# W is 16 x 24: 2 x 3 native tiles pinned at MRF tile 0; b sits in MFU 0's
# add/sub VRF at addresses 0..1; x arrives on the network input queue.
s_wr rows 2          # output: 2 native vectors
s_wr cols 3          # input: 3 native vectors
v_rd netq 0          # pop x
mv_mul 0             # W x: BFP, exact accumulation, one rounding to fp16
vv_add 0             # + b   (MFU 0, add/sub stage)
v_relu mfu=1         # relu  (MFU 1, activation stage)
v_wr netq 0          # push y
end_chain
