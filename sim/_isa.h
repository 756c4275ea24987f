/* Generated from npu/isa.py by `npu isa --c-header`; do not edit by hand. */
#ifndef NPU_ISA_H
#define NPU_ISA_H

enum {
    NPU_OP_NOP = 0,
    NPU_OP_S_WR = 1,
    NPU_OP_V_RD = 2,
    NPU_OP_MV_MUL = 3,
    NPU_OP_VV_ADD = 4,
    NPU_OP_VV_A_SUB_B = 5,
    NPU_OP_VV_B_SUB_A = 6,
    NPU_OP_VV_MAX = 7,
    NPU_OP_VV_MIN = 8,
    NPU_OP_VV_MUL = 9,
    NPU_OP_V_RELU = 10,
    NPU_OP_V_LRELU = 11,
    NPU_OP_V_SIGM = 12,
    NPU_OP_V_TANH = 13,
    NPU_OP_V_WR = 14,
    NPU_OP_END_CHAIN = 15,
    NPU_OP_M_RD = 16,
    NPU_OP_M_WR = 17,
    NPU_OP_V_EXP = 18,
    NPU_OP_V_RECIP = 19,
    NPU_OP_V_RSQRT = 20,
    NPU_OP_V_GELU = 21,
    NPU_OP_V_GELUT = 22,
    NPU_OP_V_HSWISH = 23,
    NPU_OP_V_HSIGM = 24,
    NPU_OP_V_SWISH = 25,
    NPU_OP_VR_SUM = 26,
    NPU_OP_VR_MAX = 27,
};

#endif
