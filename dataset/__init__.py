"""Dataset readers (DAVIS 2016/2017, YouTube-VOS 2018), synthetic videos and training samples."""
