"""Data sharing and exchange hub (数据共享交换平台)."""
