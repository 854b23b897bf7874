"""activate"""
