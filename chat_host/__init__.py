"""chat_host"""
